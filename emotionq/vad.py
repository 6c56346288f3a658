"""The voice-activity detector's thresholds and their defaults: one small torch-free module, read by the
detector (``emotionq.inference.segments``) and by the upload form (``emotionq.web.form``), which does not
import the model layer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VadOptions:
    """The detector's thresholds (the form's ``vad_threshold``, ``min_speech_ms``, ...)."""

    threshold: float = 0.5  # speech probability at which speech starts
    min_speech_ms: int = 250  # shorter spans are dropped
    min_silence_ms: int = 500  # a pause at least this long ends a span
    speech_pad_ms: int = 30  # added on each side of a span

    @classmethod
    def from_options(cls, options: dict) -> VadOptions:
        return cls(threshold=options.get("vad_threshold", cls.threshold),
                   min_speech_ms=options.get("min_speech_ms", cls.min_speech_ms),
                   min_silence_ms=options.get("min_silence_ms", cls.min_silence_ms),
                   speech_pad_ms=options.get("speech_pad_ms", cls.speech_pad_ms))
