"""The model contract: what a worker needs of a model, and what a model needs of its runtime.

A worker process loads one model (``family(name).load``), asks it to score batches, reads what it is
(``info``) and closes it; it never sees a model's weights, framework or runtime. The shape is
Triton's python backend (``initialize``, ``execute(requests) -> responses``, ``finalize``) and
LitServe's ``setup``/``predict``.

- ``Model.load`` returns a model ready to answer: loaded on its device, checked, warmed up (one
  small prediction), so that the worker reports ready only once the model has answered.
- ``Model.predict_batch`` takes several recordings (16 kHz mono float32) with one options dict
  each (the run's model options, e.g. ``granularity``, ``embedding``, ``bounds``) and returns one
  result (a JSON-ready dict) or one exception per item, in order: one bad item fails alone.
  Faults of the whole call (a TransientFault such as CUDA out of memory, ValueError for arguments
  wrong for every item) raise. ``before_pass()`` is called before each forward pass and names the
  items nobody wants any more (Canceled for them); it may raise to abort the call (a time limit).
- ``Model.info`` says which model produced a result (``ModelInfo.output`` goes into every result).
- ``Model.close`` frees its memory.

A runtime (``Runtime``: torch eager, onnxruntime on exported graphs) is a strategy handed to a model
when it is built: it runs the encoder's forward pass, and the model keeps the rest (input
normalisation, pooling, head). A model never swaps it behind the worker's back.

Adding a model family (a speaker encoder, SenseVoice): write a class with these four methods in its
own module of ``emotionq.inference`` and name it in ``FAMILIES``; its per-item options and result keys
are its own. Adding a runtime: a class with ``name``, ``dtype``, ``features`` and ``close``, chosen in
the family's ``load``. Neither changes ``emotionq.worker``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from emotionq.errors import ConfigurationError

BeforePass = Callable[[], Collection[int]]
FAMILIES = {"emotion2vec": "emotionq.inference.model:EmotionModel",  # imported only when chosen
            "sensevoice": "emotionq.inference.sensevoice:SenseVoiceModel"}  # (emotionq.inference.registry)
DEFAULT_FAMILY = "emotion2vec"


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model is and what runs it: in every result (``output``) and in /readyz."""

    id: str  # hub id or local directory
    revision: str | None
    device: str  # "cpu", "cuda:0"
    dtype: str  # the compute dtype: "float32", "bfloat16", "float16", "int8" (int8 weights, onnx-int8)
    runtime: str  # what runs the forward pass: "torch", "onnxruntime", "onnxruntime-int8"
    untrained: bool  # a randomly initialised checkpoint (see emotionq.inference.checkpoint)
    runtime_note: str = ""  # why that runtime: its check and timings, or why another was not used

    def output(self) -> dict:
        """The ``model`` object of a result."""
        return {"id": self.id, "revision": self.revision, "device": self.device, "dtype": self.dtype,
                "runtime": self.runtime, "untrained": self.untrained}


class Model(Protocol):
    """One model on one device, as the worker uses it (see the module docstring)."""

    @classmethod
    def load(cls, model: str, *, revision: str | None = None, device: str = "cpu", threads: int | None = None,
             hub: str = "ms", runtime: str = "auto", runtime_cache_dir: str | Path | None = None) -> Model:
        """The model ``model`` (hub id or local directory) loaded, checked and warmed up; ConfigurationError
        if it cannot be. A family ignores what does not apply to it (one runtime only, no hub)."""
        ...

    def predict_batch(self, items: list[np.ndarray], *, options: list[dict] | None = None, window_s: float = 30.0,
                      max_batch_windows: int = 16, max_batch_s: float | None = None,
                      before_pass: BeforePass | None = None) -> list[dict | Exception]:
        """One result or one exception per item, in order (see the module docstring)."""
        ...

    def info(self) -> ModelInfo:
        ...

    def close(self) -> None:
        ...


class Runtime(Protocol):
    """What runs a model's encoder: frames (B, T, D) float32 of B windows, and each window's frame count."""

    name: str  # reported as ModelInfo.runtime
    dtype: str  # reported as ModelInfo.dtype

    def features(self, sources: list) -> tuple:
        ...

    def close(self) -> None:
        """Let go of what it holds (a module, sessions): the model is closing."""
        ...


def family(name: str = DEFAULT_FAMILY) -> type[Model]:
    """The class of the model family ``name``, imported now; ConfigurationError for an unknown name."""
    try:
        module, _, attr = FAMILIES[name].partition(":")
    except KeyError:
        raise ConfigurationError(f"unknown model family {name!r}: choose one of {', '.join(FAMILIES)}") from None
    return getattr(importlib.import_module(module), attr)
