"""Conversation metrics on hand-placed segments: the definitions' edges (padding at a quick turn change is no
overlap, a short "yes" is no interruption, silences over 2 s from the recording's start to its end)."""

from __future__ import annotations

from emotionq.inference.conversation import metrics, speakers
from emotionq.inference.labels import LABELS


def _seg(party: str, start: float, end: float, label: str = "neutral") -> dict:
    scores = {k: (0.92 if k == label else 0.01) for k in LABELS}
    return {"channel": party, "speaker": party, "start": start, "end": end, "label": label, "score": 0.92,
            "scores": scores}


def test_a_quick_turn_change_is_neither_an_overlap_nor_an_interruption():
    out = metrics([_seg("a", 0.0, 3.0), _seg("b", 2.94, 6.0), _seg("a", 6.5, 8.0)], by="speaker", duration_s=8.0)
    assert out["overlap"] == {"total_s": 0, "count": 0, "events": []}
    assert out["interruptions"] == {"count": 0, "events": []}
    assert [t["party"] for t in out["turns"]] == ["a", "b", "a"]


def test_an_interruption_is_who_cut_in_on_whom_and_a_short_yes_is_only_an_overlap():
    segments = [_seg("a", 0.0, 5.0), _seg("b", 3.0, 7.0, "angry"),  # b cuts in at 3 and goes on: interruption
                _seg("a", 8.0, 12.0), _seg("b", 9.0, 9.5)]  # b's "yes" under a: overlap only, no turn
    out = metrics(segments, by="speaker", duration_s=12.0)
    assert out["interruptions"] == {"count": 1, "events": [{"at": 3.0, "by": "b", "of": "a"}]}
    assert out["overlap"]["count"] == 2 and out["overlap"]["total_s"] == 2.5
    a, b = out["parties"]
    assert (a["turns"], b["turns"]) == (2, 1) and (b["interrupted_others"], a["was_interrupted"]) == (1, 1)
    assert (a["talk_s"], b["talk_s"]) == (9.0, 4.5) and a["talk_ratio"] == round(9 / 13.5, 4)
    assert out["turns"][1]["top_label"] == "angry"
    assert out["longest_monologue"] == {"party": "a", "start": 0.0, "end": 5.0, "seconds": 5.0}


def test_non_talk_counts_silences_over_two_seconds_including_the_ends():
    out = metrics([_seg("a", 2.5, 4.0), _seg("b", 5.9, 7.0), _seg("a", 9.5, 10.0)], by="speaker", duration_s=13.0)
    assert out["non_talk"] == {"over_s": 2.0, "total_s": 8.0, "longest_s": 3.0, "count": 3}


def test_speakers_sum_up_each_speaker_in_order_of_first_speech():
    out = speakers([_seg("S2", 0.0, 1.0, "sad"), _seg("S1", 1.0, 4.0, "happy"), _seg("S2", 4.0, 5.0, "sad")])
    assert [(s["name"], s["speech_s"], s["share"], s["top_label"]) for s in out] == [
        ("S2", 2.0, 0.4, "sad"), ("S1", 3.0, 0.6, "happy")]
    assert out[0]["summary"]["share"] == {"sad": 1.0}
