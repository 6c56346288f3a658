"""The model layer: audio decoding and emotion2vec scoring, free of Celery and FastAPI.

Cheap to import (torch and funasr load only with a model), so the API can use
``probe`` and ``decode`` to check uploads.
"""

from emotionq.inference.audio import SAMPLE_RATE, AudioInfo, decode, probe
from emotionq.inference.checkpoint import write_checkpoint
from emotionq.inference.contract import Model, ModelInfo, family
from emotionq.inference.labels import LABELS, english
from emotionq.inference.model import EmotionModel
from emotionq.inference.windows import group_windows, window_bounds

__all__ = [
    "LABELS",
    "SAMPLE_RATE",
    "AudioInfo",
    "EmotionModel",
    "Model",
    "ModelInfo",
    "decode",
    "english",
    "family",
    "group_windows",
    "probe",
    "window_bounds",
    "write_checkpoint",
]
