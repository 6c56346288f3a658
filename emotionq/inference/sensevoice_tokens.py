"""SenseVoiceSmall's vocabulary as funasr 1.4.16 uses it: the size, and the ids of its tag tokens.

The CTC output of SenseVoiceSmall starts with four query frames (language, emotion, event, text
normalisation), then the text. Ids confirmed in funasr's code: the languages, ``withitn``/``woitn`` and the
emotions happy, sad, angry, neutral, unknown; the other event and emotion ids are those two independent
re-implementations agree on. Light: no torch, no funasr (the API validates ``language`` with ``LANGUAGES``).
"""

from __future__ import annotations

VOCAB_SIZE = 25055
BLANK = 0  # also <unk>
SPECIALS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2
FIRST_TAG = 24884  # ids from here to the end are tags (<|...|>)

LANGUAGE_IDS = {"zh": 24884, "en": 24885, "yue": 24888, "ja": 24892, "ko": 24896, "nospeech": 24992}
LANGUAGES = ("auto", "zh", "en", "yue", "ja", "ko")  # what a job may ask for (``language``)
EMOTION_IDS = {"happy": 25001, "sad": 25002, "angry": 25003, "neutral": 25004, "fearful": 25005,
               "disgusted": 25006, "surprised": 25007, "other": 25008, "unknown": 25009}
EVENT_IDS = {"speech": 24993, "bgm": 24995, "laughter": 24997, "applause": 24999, "cry": 25010, "sneeze": 25011,
             "breath": 25012, "cough": 25013, "sing": 25014, "speech_noise": 25015, "event_unknown": 25019}
TEXTNORM_IDS = {"withitn": 25016, "woitn": 25017}

_TAG_TEXT = {
    **{v: k for k, v in LANGUAGE_IDS.items()},
    **{v: ("EMO_UNKNOWN" if k == "unknown" else k.upper()) for k, v in EMOTION_IDS.items()},
    **{v: {"speech": "Speech", "bgm": "BGM", "laughter": "Laughter", "applause": "Applause", "cry": "Cry",
           "sneeze": "Sneeze", "breath": "Breath", "cough": "Cough", "sing": "Sing",
           "speech_noise": "Speech_Noise", "event_unknown": "Event_UNK"}[k] for k, v in EVENT_IDS.items()},
    **{v: k for k, v in TEXTNORM_IDS.items()},
}


def tag(token_id: int) -> str:
    """The piece of tag ``token_id`` (``<|en|>``); unnamed ids in the tag range get a placeholder."""
    return f"<|{_TAG_TEXT.get(token_id, f'tag{token_id}')}|>"
