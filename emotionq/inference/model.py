"""emotion2vec through funasr: load once, warm up, score audio (``EmotionModel``).

The forward pass is funasr's own (``Emotion2vec.extract_features`` and its
``proj`` head, as ``Emotion2vec.inference`` runs them: ``emotionq.inference.encoder``),
on the runtime ``load`` chooses and hands the model: torch under ``torch.autocast``
on CUDA; on a CPU torch or onnxruntime (``emotionq.inference.runtime``). It keeps
the worker's contract (``emotionq.inference.contract``).
``predict`` scores one recording a window at a time; ``predict_batch``
scores the windows of several recordings in padded forward passes that give
what one at a time gives (to float tolerance: see ``funasr_patches`` for the
padding fix). torch and funasr are imported only when a model is loaded.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np

from emotionq.errors import Canceled, ConfigurationError, ServerFault, TransientFault
from emotionq.inference import framescores, heap
from emotionq.inference.audio import SAMPLE_RATE
from emotionq.inference.contract import ModelInfo, Runtime
from emotionq.inference.encoder import TorchRuntime, head_scores, score_windows
from emotionq.inference.funasr_patches import trim_alibi_cache
from emotionq.inference.items import checked_items
from emotionq.inference.labels import LABELS, summary
from emotionq.inference.loading import autocast_dtype, load_automodel
from emotionq.inference.windows import FRAME_STRIDE, group_windows, window_bounds

FRAME_RATE = SAMPLE_RATE // FRAME_STRIDE  # 50 frames per second
# Padded seconds of audio per forward pass of predict_batch, unless the caller says. On a GPU big passes
# keep it busy (four 30 s windows). On a CPU with torch they lose past ~16 padded seconds (the
# attention's batch x heads x T^2 tensors outgrow the caches), while under it batching short windows
# pays (torch's per-operator overhead and the weights' reads are shared); see benchmarks/batching.py.
# On onnxruntime (fp32 or int8) a padded pass never paid: its operators cost little, so the padding
# (up to a quarter more frames) and the batch's copies outweigh the weights read once; one window a
# pass did 10-15 % less CPU work than passes of up to 8 on the short and utterance mixes (large, int8),
# so the worker keeps up with the predict loop (benchmarks/runtime.py: worker vs predict loop).
MAX_BATCH_S = {"cuda": 120.0, "cpu": 16.0, "onnxruntime": 0.0}

log = logging.getLogger(__name__)


class EmotionModel:
    """One emotion2vec model on one device, run by one runtime (``contract.Runtime``); ``predict`` is
    serialised by a lock. It keeps the ``contract.Model`` contract: ``load``, ``predict_batch``, ``info``, ``close``."""

    def __init__(self, automodel, runtime: Runtime, *, model_id: str, revision: str | None, untrained: bool,
                 runtime_note: str = "") -> None:
        self._automodel = automodel
        self._module = automodel.model
        self._runtime = runtime
        self._runtime_note = runtime_note
        self._model_id = model_id
        self._revision = revision
        self._untrained = untrained
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        model: str,
        *,
        revision: str | None = None,
        device: str = "cpu",
        threads: int | None = None,
        hub: str = "ms",
        runtime: str = "auto",
        runtime_cache_dir: str | Path | None = None,
    ) -> EmotionModel:
        """Load ``model`` (hub id or local directory), check it, warm it up; ConfigurationError if it cannot.

        On a CPU, ``runtime`` (auto, torch, onnx, onnx-int8) chooses what runs the forward pass, with onnx graphs
        cached in ``runtime_cache_dir`` (see ``emotionq.inference.runtime``); CUDA always runs torch.
        """
        import torch

        from emotionq.inference.runtime import RUNTIMES

        if runtime not in RUNTIMES:
            raise ConfigurationError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
        automodel, untrained = load_automodel(model, revision=revision, device=device, threads=threads, hub=hub)
        chosen: Runtime = TorchRuntime(automodel.model, autocast_dtype(device))
        if device.startswith("cuda"):
            note = "CUDA runs torch under autocast"
            if runtime.startswith("onnx"):
                log.warning("runtime %s is for CPU workers: %s runs torch under autocast on %s", runtime, model, device)
        else:
            from emotionq.inference.runtime import choose

            chosen, note = choose(automodel, chosen, model_id=model, setting=runtime, cache_dir=runtime_cache_dir,
                                  threads=threads or torch.get_num_threads())
        self = cls(automodel, chosen, model_id=model, revision=revision, untrained=untrained, runtime_note=note)
        self._warm_up()
        return self

    def using(self, runtime: Runtime) -> EmotionModel:
        """This model's weights run by another ``runtime`` (a benchmark's fp32 beside autocast)."""
        return EmotionModel(self._automodel, runtime, model_id=self._model_id, revision=self._revision,
                            untrained=self._untrained, runtime_note="chosen by the caller")

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def revision(self) -> str | None:
        return self._revision

    @property
    def device(self) -> str:
        return str(next(self._live_module().parameters()).device)

    @property
    def dtype(self) -> str:
        """The compute dtype: autocast's on CUDA, float32 otherwise."""
        return self._runtime.dtype

    @property
    def untrained(self) -> bool:
        return self._untrained

    @property
    def runtime(self) -> str:
        """What runs the forward pass: "onnxruntime", "onnxruntime-int8" or "torch"."""
        return self._runtime.name

    @property
    def runtime_note(self) -> str:
        """Why that runtime: its check, timings, or the reason onnxruntime was not used."""
        return self._runtime_note

    @property
    def engine(self) -> Runtime:
        """The runtime object that runs the forward pass (``TorchRuntime`` or ``runtime.OnnxRuntime``)."""
        return self._runtime

    @property
    def automodel(self):
        """funasr's ``AutoModel`` as loaded (``.model`` is its torch module), for checks against funasr's own
        ``generate`` and for benchmarks; the module's encoder weights are empty where onnxruntime runs it."""
        self._live_module()
        return self._automodel

    @property
    def labels(self) -> list[str]:
        return list(LABELS)

    @property
    def embed_dim(self) -> int:
        return int(self._live_module().proj.in_features)

    def info(self) -> ModelInfo:
        """Which model produced a result (``output()`` goes into every result), and why its runtime."""
        return ModelInfo(id=self.model_id, revision=self.revision, device=self.device, dtype=self.dtype,
                         runtime=self.runtime, untrained=self.untrained, runtime_note=self.runtime_note)

    def predict(
        self,
        samples: np.ndarray,
        *,
        granularity: str = "utterance",
        embedding: bool = False,
        window_s: float = 30.0,
    ) -> dict:
        """Score 16 kHz mono float32 samples (as ``audio.decode`` returns them).

        Returns plain JSON-ready data: ``scores`` (label -> probability), ``top_label``,
        ``top_score``, ``timeline`` (one entry per window), ``duration_s``, ``frame_rate``,
        ``model``; ``embedding`` (D floats) and ``frames`` (T x D) when asked for.
        The windows of one recording are scored one per forward pass (no padding), so
        memory stays that of one window; ``predict_batch`` scores several recordings together.
        """
        [result] = self.predict_batch(
            [samples], options=[{"granularity": granularity, "embedding": embedding}], window_s=window_s,
            max_batch_windows=1,
        )
        if isinstance(result, Exception):
            raise result
        return result

    def predict_batch(self, items: list[np.ndarray], *, options: list[dict] | None = None, window_s: float = 30.0,
                      max_batch_windows: int = 16, max_batch_s: float | None = None,
                      before_pass: Callable[[], Collection[int]] | None = None) -> list[dict | Exception]:
        """Score several recordings in shared forward passes.

        Each result is what ``predict(items[i], **options[i], window_s=window_s)`` returns
        (same keys, same semantics, equal to float tolerance), or the exception it would raise
        for that item alone (AudioError from ``check_samples``, ValueError for a bad
        granularity, ServerFault for a non-finite output), so one bad item fails alone.
        A CUDA out-of-memory error raises TransientFault(code="cuda_oom") for the whole call
        (retry with fewer items or a smaller ``max_batch_windows``); a bad ``window_s`` raises
        ValueError.

        Every item is cut into windows as ``predict`` cuts it; the windows of all items are grouped
        into forward passes by ``group_windows`` (at most ``max_batch_windows`` windows and
        ``max_batch_s`` padded seconds a pass; unset: ``MAX_BATCH_S`` for the device and runtime: on
        onnxruntime 0, one window a pass). Windows are
        layer-normed alone, zero-padded and scored with a ``padding_mask``; the positional convolution
        sees zeros at padded frames (``funasr_patches.zeroed_padding``), so a window's frames are
        those it gets alone.

        ``before_pass()``, if given, is called before each forward pass and returns the indices
        of items nobody wants any more: their remaining windows are skipped and their results
        are Canceled. It may raise to abort the whole call (a time limit).
        """
        import torch

        max_batch_s = self._check_batch_call(items, options, window_s, max_batch_windows, max_batch_s)
        results, checked = checked_items(items, options, window_s)
        if not checked:
            return results
        dropped: set[int] = set()

        def skip() -> set[int]:
            if before_pass is not None:
                dropped.update(before_pass())
            return dropped

        with self._lock:
            try:
                scored = self._score_items(checked, max_batch_windows=max_batch_windows, max_batch_s=max_batch_s,
                                           skip=skip)
                for item in checked:
                    results[item["index"]] = (Canceled("nobody wants this recording's result any more")
                                              if item["index"] in dropped else self._combine(item, scored[item["index"]]))
            except torch.cuda.OutOfMemoryError as exc:
                self._empty_cache()
                seconds = sum(item["samples"].size for item in checked) / SAMPLE_RATE
                raise TransientFault(f"CUDA ran out of memory scoring {seconds:.1f} s of audio in {len(checked)} "
                                     "recordings: retry later, or with fewer recordings at once",
                                     code="cuda_oom") from exc
            finally:
                if self._module is not None:
                    trim_alibi_cache(self._module)
        return results

    def _check_batch_call(self, items: list, options: list | None, window_s: float, max_batch_windows: int,
                          max_batch_s: float | None) -> float:
        """ValueError for arguments that are wrong for the whole call; the pass size cap, by device if unset."""
        if max_batch_windows < 1:
            raise ValueError(f"max_batch_windows must be at least 1, not {max_batch_windows}")
        if options is not None and len(options) != len(items):
            raise ValueError(f"{len(options)} options for {len(items)} items")
        window_bounds(0, window_s)  # ValueError for a bad window_s
        if max_batch_s is None:
            if self.device.startswith("cuda"):
                return MAX_BATCH_S["cuda"]
            return MAX_BATCH_S["onnxruntime" if self.runtime.startswith("onnxruntime") else "cpu"]
        return max_batch_s

    def close(self) -> None:
        """Free the model (and CUDA's cached blocks)."""
        self._module = None
        self._automodel = None
        self._runtime.close()
        gc.collect()
        self._empty_cache()

    # -- internals -------------------------------------------------------------------------------

    def _live_module(self):
        if self._module is None:
            raise RuntimeError("the emotion model was closed")
        return self._module

    def _score_items(self, items: list[dict], *, max_batch_windows: int, max_batch_s: float,
                     skip: Callable[[], set[int]]) -> dict[int, list[dict | None]]:
        """Every window of ``items`` scored, in the forward passes ``group_windows`` forms: per item index,
        its windows' results in order. Before each pass, ``skip()`` names the items whose windows are no
        longer wanted (None for them)."""
        windows = [(item["index"], item["samples"][a:b], item["granularity"] == "frame")
                   for item in items for a, b in item["bounds"]]
        groups = group_windows([w.size for _, w, _ in windows], max_windows=max_batch_windows,
                               max_samples=int(max_batch_s * SAMPLE_RATE))
        scored: list[dict | None] = [None] * len(windows)
        for group in groups:
            unwanted = skip()
            group = [i for i in group if windows[i][0] not in unwanted]
            if not group:
                continue
            passed = self._forward([windows[i][1] for i in group], [windows[i][2] for i in group])
            for i, result in zip(group, passed):
                scored[i] = result
            if len(group) * windows[group[0]][1].size >= heap.TRIM_AFTER_S * SAMPLE_RATE:  # a big pass: its memory
                heap.trim()  # goes back to the system, not into the next pass's peak
        per_item: dict[int, list[dict | None]] = {item["index"]: [] for item in items}
        for (owner, _, _), result in zip(windows, scored):
            per_item[owner].append(result)
        return per_item

    def _forward(self, windows: list[np.ndarray], frames: list[bool]) -> list[dict]:
        """``encoder.score_windows`` on this model's module and runtime."""
        return score_windows(self._live_module(), self._runtime, windows, frames)

    def _combine(self, item: dict, windows: list[dict]) -> dict | ServerFault:
        """One recording's result from its scored windows, as ``predict`` returns it."""
        import torch

        samples, bounds = item["samples"], item["bounds"]
        if len(windows) == 1:
            mean = windows[0]["mean"]
        else:  # frame-count-weighted mean of window means = mean over all frames
            total = sum(w["n"] for w in windows)
            mean = sum(w["mean"].double() * w["n"] for w in windows).float() / total
        if not torch.isfinite(mean).all():  # never store NaN as a result
            return ServerFault(f"the model's output is not finite for {samples.size / SAMPLE_RATE:.1f} s "
                               "of audio", code="model_output_not_finite")
        out = summary(self._scores(mean))
        out["timeline"] = [
            {"start": a / SAMPLE_RATE, "end": b / SAMPLE_RATE, **summary(w["scores"], top_score=False)}
            for (a, b), w in zip(bounds, windows)
        ]
        out["duration_s"] = samples.size / SAMPLE_RATE
        out["frame_rate"] = FRAME_RATE
        if item["embedding"]:
            out["embedding"] = mean[0].cpu().tolist()
        if item["granularity"] == "frame":
            out["frames"] = [row for w in windows for row in w["frames"].tolist()]
            out["frame_scores"] = framescores.over_windows(self._live_module(), windows,
                                                           [a / SAMPLE_RATE for a, _ in bounds],
                                                           sample_rate=SAMPLE_RATE)
        out["model"] = self.info().output()
        return out

    def _scores(self, mean):
        return head_scores(self._live_module(), mean)

    def _warm_up(self) -> None:
        """One short forward pass, so that the first request does not pay for lazy initialisation."""
        noise = np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32) * 0.1
        self.predict(noise)

    def _empty_cache(self) -> None:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
