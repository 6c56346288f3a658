"""SenseVoiceSmall through funasr: what was said, in which language, the audio event and an emotion tag.

``SenseVoiceModel`` keeps the worker's contract (``emotionq.inference.contract``). Its forward pass is
funasr's ``SenseVoiceSmall.inference`` (the frontend's fbank, the four query embeddings, the encoder, the
CTC log-softmax, greedy decoding) with two differences that change no token: each row of a pass carries
its own language and text-normalisation query, so segments of runs that ask differently share passes; and
the log-softmax of the query frames is kept, so the result has posteriors (frame 0 the language, 1 the
emotion, 2 the event), not only the arg-max tags. ``decode`` gives the raw decode funasr's ``generate``
gives (tests compare them); ``predict_batch`` one result per recording, a window per segment.
"""

from __future__ import annotations

import gc
import logging
import re
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotionq.errors import AudioError, Canceled, ConfigurationError, TransientFault
from emotionq.inference.audio import MIN_SAMPLES, SAMPLE_RATE, check_samples
from emotionq.inference.checkpoint import unmatched_keys
from emotionq.inference.contract import ModelInfo
from emotionq.inference.loading import load_automodel
from emotionq.inference.sensevoice_tokens import EMOTION_IDS, EVENT_IDS, LANGUAGE_IDS, LANGUAGES, VOCAB_SIZE
from emotionq.inference.windows import group_windows

log = logging.getLogger(__name__)

OPTIONS = ("bounds", "language", "itn")
MAX_BATCH_S = {"cuda": 120.0, "cpu": 30.0}  # padded seconds per pass (attention is over 60 ms frames)
TAG = re.compile(r"<\|[^|]*\|>")
QUERY_FRAMES = 4  # language, emotion, event, text normalisation


@dataclass(frozen=True)
class Decoded:
    """One segment as SenseVoice heard it."""

    tokens: list[int]  # the greedy CTC decode, blanks and repeats removed (the tags first)
    raw: str  # the tokens as text, tags included: what funasr's generate returns
    language: dict[str, float]  # posteriors over the language tags at the language frame
    emotion: dict[str, float]  # over the emotion tags at the emotion frame
    event: dict[str, float]  # over the event tags at the event frame

    @property
    def text(self) -> str:
        """The transcript without tags."""
        return " ".join(TAG.sub(" ", self.raw).split())

    def window(self) -> dict:
        """The keys this model adds to a segment."""
        event = max(self.event, key=self.event.get)
        emotion = max(self.emotion, key=self.emotion.get)
        return {"text": self.text, "language": max(self.language, key=self.language.get),
                "events": [] if event == "speech" else [{"tag": event, "probability": round(self.event[event], 4)}],
                "emotion_tag": {"label": emotion, "scores": {k: round(v, 4) for k, v in self.emotion.items()}}}


class SenseVoiceModel:
    """One SenseVoiceSmall on one device (torch, float32); calls are serialised by a lock."""

    def __init__(self, automodel, *, model_id: str, revision: str | None, device: str, untrained: bool) -> None:
        self._automodel = automodel
        self._module = automodel.model
        self._model_id, self._revision, self._device, self._untrained = model_id, revision, device, untrained
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model: str, *, revision: str | None = None, device: str = "cpu", threads: int | None = None,
             hub: str = "ms", runtime: str = "auto", runtime_cache_dir: str | Path | None = None) -> SenseVoiceModel:
        """Load ``model`` (hub id or local directory), check it is a whole SenseVoiceSmall, warm it up.
        torch runs it on every device (``runtime`` and its cache do not apply)."""
        automodel, untrained = load_automodel(model, revision=revision, device=device, threads=threads, hub=hub,
                                              check=check_module, what="SenseVoice model")
        self = cls(automodel, model_id=model, revision=revision, device=device, untrained=untrained)
        noise = np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32) * 0.1
        self.decode([noise])  # warm-up: the first job does not pay for lazy initialisation
        return self

    def info(self) -> ModelInfo:
        return ModelInfo(id=self._model_id, revision=self._revision, device=self._device, dtype="float32",
                         runtime="torch", untrained=self._untrained, runtime_note="funasr's SenseVoiceSmall module")

    def close(self) -> None:
        self._module = self._automodel = None
        gc.collect()

    def decode(self, segments: list[np.ndarray], *, language: str | list[str] = "auto", itn: bool | list[bool] = False,
               max_batch_windows: int = 16, max_batch_s: float | None = None,
               skip: Callable[[], Collection[int]] = set) -> list[Decoded | None]:
        """Each segment (16 kHz float32, at most 30 s) decoded, in passes of similar lengths; None for those
        ``skip()``, called before each pass, names."""
        n = len(segments)
        languages = [language] * n if isinstance(language, str) else list(language)
        itns = [itn] * n if isinstance(itn, bool) else list(itn)
        cap = max_batch_s or MAX_BATCH_S["cuda" if self._device.startswith("cuda") else "cpu"]
        out: list[Decoded | None] = [None] * n
        with self._lock:
            for group in group_windows([s.size for s in segments], max_windows=max_batch_windows,
                                       max_samples=int(cap * SAMPLE_RATE)):
                unwanted = skip()
                group = [i for i in group if i not in unwanted]
                if group:
                    passed = self._forward([segments[i] for i in group], [languages[i] for i in group],
                                           [itns[i] for i in group])
                    for i, d in zip(group, passed):
                        out[i] = d
        return out

    def predict_batch(self, items: list[np.ndarray], *, options: list[dict] | None = None, window_s: float = 30.0,
                      max_batch_windows: int = 16, max_batch_s: float | None = None,
                      before_pass: Callable[[], Collection[int]] | None = None) -> list[dict | Exception]:
        """Per recording ``{"timeline": [window per segment]}`` (text, language, events, emotion_tag), the
        segments being ``bounds`` or the whole recording; a bad item fails alone (ValueError, AudioError)."""
        options = options or [{}] * len(items)
        if len(options) != len(items):
            raise ValueError(f"{len(options)} options for {len(items)} items")
        results: list[dict | Exception | None] = [None] * len(items)
        pieces: list[tuple[int, np.ndarray, str, bool]] = []
        for index, (samples, opts) in enumerate(zip(items, options)):
            try:
                pieces.extend((index, seg, lang, itn) for seg, lang, itn in _segments(samples, opts, window_s))
            except (AudioError, ValueError, TypeError) as exc:
                results[index] = exc
        dropped: set[int] = set()

        def skip() -> set[int]:
            if before_pass is not None:
                dropped.update(before_pass())
            return {k for k, piece in enumerate(pieces) if piece[0] in dropped}

        import torch

        try:
            decoded = self.decode([p[1] for p in pieces], language=[p[2] for p in pieces],
                                  itn=[p[3] for p in pieces], max_batch_windows=max_batch_windows,
                                  max_batch_s=max_batch_s, skip=skip)
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            raise TransientFault(f"CUDA ran out of memory transcribing {len(pieces)} segments: retry later, or "
                                 "with fewer recordings at once", code="cuda_oom") from exc
        for index in range(len(items)):
            if results[index] is not None:
                continue
            if index in dropped:
                results[index] = Canceled("nobody wants this recording's result any more")
                continue
            results[index] = {"timeline": [d.window() for (owner, *_), d in zip(pieces, decoded) if owner == index]}
        return results

    # -- internals -------------------------------------------------------------------------------

    def _forward(self, segments: list[np.ndarray], languages: list[str], itns: list[bool]) -> list[Decoded]:
        """``SenseVoiceSmall.inference`` on one padded pass, each row with its own queries."""
        import torch
        from funasr.utils.load_utils import extract_fbank

        module, kwargs = self._module, self._automodel.kwargs
        if module is None:
            raise RuntimeError("the SenseVoice model was closed")
        with torch.no_grad():
            speech, lengths = extract_fbank([torch.from_numpy(s) for s in segments], data_type="sound",
                                            frontend=kwargs["frontend"])
            speech, lengths = speech.to(self._device), lengths.to(self._device)
            ids = [[module.lid_dict.get(lang, 0), 1, 2, module.textnorm_dict["withitn" if itn else "woitn"]]
                   for lang, itn in zip(languages, itns)]
            queries = module.embed(torch.LongTensor(ids).to(speech.device))
            speech = torch.cat((queries, speech), dim=1)
            lengths = lengths + QUERY_FRAMES
            encoder_out, encoder_lens = module.encoder(speech, lengths)
            if isinstance(encoder_out, tuple):
                encoder_out = encoder_out[0]
            logp = module.ctc.log_softmax(encoder_out)
        tokenizer = kwargs["tokenizer"]
        out = []
        for i in range(len(segments)):
            x = logp[i, : int(encoder_lens[i])]
            yseq = torch.unique_consecutive(x.argmax(dim=-1), dim=-1)
            tokens = yseq[yseq != module.blank_id].tolist()
            out.append(Decoded(tokens=tokens, raw=tokenizer.decode(tokens), language=_posteriors(x[0], LANGUAGE_IDS),
                               emotion=_posteriors(x[1], EMOTION_IDS), event=_posteriors(x[2], EVENT_IDS)))
        return out


def _posteriors(logp, ids: dict[str, int]) -> dict[str, float]:
    """The distribution over the tags ``ids`` at one CTC frame, renormalised over them."""
    p = logp[list(ids.values())].double().exp()
    p = p / p.sum()
    return dict(zip(ids, (float(v) for v in p)))


def _segments(samples: np.ndarray, options: dict, window_s: float) -> list[tuple[np.ndarray, str, bool]]:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"unknown options {unknown}: SenseVoice takes {', '.join(OPTIONS)}")
    language = options.get("language", "auto")
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, not {language!r}")
    samples = check_samples(np.ascontiguousarray(samples, dtype=np.float32).reshape(-1))
    bounds = options.get("bounds") or [(0, samples.size)]
    longest = int(window_s * SAMPLE_RATE)
    if any(not (0 <= a and a + MIN_SAMPLES <= b <= samples.size and b - a <= longest) for a, b in bounds):
        raise ValueError(f"bounds must be sample ranges of {MIN_SAMPLES} to {longest} samples within the recording")
    return [(samples[int(a):int(b)], language, bool(options.get("itn", False))) for a, b in bounds]


def check_module(automodel, model: str) -> None:
    """Refuse what is not a whole SenseVoiceSmall with its 25,055-token vocabulary."""
    module = automodel.model
    if not all(hasattr(module, a) for a in ("ctc", "embed", "lid_dict", "textnorm_dict")):
        raise ConfigurationError(f"{model!r} is not SenseVoiceSmall: name a SenseVoiceSmall checkpoint")
    if module.vocab_size != VOCAB_SIZE:
        raise ConfigurationError(f"{model!r} has a vocabulary of {module.vocab_size} tokens, not SenseVoiceSmall's "
                                 f"{VOCAB_SIZE}")
    missing = unmatched_keys(module, automodel.kwargs.get("init_param", ""), automodel.kwargs.get("scope_map") or [])
    if missing:
        raise ConfigurationError(f"the checkpoint of {model!r} lacks {len(missing)} weights ({missing[:3]}...): "
                                 "check the model directory or revision")
