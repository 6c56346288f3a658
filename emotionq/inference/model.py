"""emotion2vec loaded through funasr's ``AutoModel``: load once, warm up, score audio.

The forward pass is funasr's own (``Emotion2vec.extract_features`` and its
``proj`` head, as ``Emotion2vec.inference`` runs them), one window at a time,
under ``torch.autocast`` on CUDA. torch and funasr are imported only when a
model is loaded.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
from pathlib import Path

import numpy as np

from emotionq.errors import ConfigurationError, ServerFault, TransientFault
from emotionq.inference.audio import SAMPLE_RATE, check_samples
from emotionq.inference.checkpoint import read_marker, unmatched_keys
from emotionq.inference.labels import LABELS, english
from emotionq.inference.windows import FRAME_STRIDE, window_bounds

FRAME_RATE = SAMPLE_RATE // FRAME_STRIDE  # 50 frames per second
GRANULARITIES = ("utterance", "frame")

log = logging.getLogger(__name__)


class EmotionModel:
    """One emotion2vec model on one device. ``predict`` is serialised by a lock."""

    def __init__(self, automodel, *, model_id: str, revision: str | None, untrained: bool, autocast_dtype) -> None:
        self._automodel = automodel
        self._module = automodel.model
        self._model_id = model_id
        self._revision = revision
        self._untrained = untrained
        self._autocast_dtype = autocast_dtype  # None: full precision
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
    ) -> EmotionModel:
        """Load ``model`` (hub id or local directory), check it, warm it up; ConfigurationError if it cannot."""
        import torch

        local = _local_dir(model)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigurationError(f"device {device!r} was asked for but CUDA is not available: use cpu")
        kwargs = dict(
            model=model,
            device=device,
            hub=hub,
            disable_update=True,
            disable_pbar=True,
            ncpu=threads or torch.get_num_threads(),  # funasr calls torch.set_num_threads(ncpu), default 4
        )
        if revision:
            kwargs["model_revision"] = revision
        if local is not None and (local / "model.pt").is_file():
            kwargs["init_param"] = str(local / "model.pt")  # funasr resolves a relative one against the cwd
        try:
            from funasr import AutoModel

            automodel = AutoModel(**kwargs)
        except Exception as exc:  # noqa: BLE001 - funasr raises anything from asserts to KeyError
            reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"  # funasr's can run to pages
            if local is None:
                reason = f"the hub did not provide it (no network, or no such id/revision?) [{reason}]"
            raise ConfigurationError(
                f"cannot load the emotion model {model!r}: {reason}. "
                "Name a reachable hub id or a directory with config.yaml and model.pt "
                "(python -m emotionq.inference.checkpoint DIR writes an untrained one)"
            ) from exc
        if threads:
            torch.set_num_threads(threads)
        _check_module(automodel, model)
        automodel.model.eval()
        model_path = automodel.kwargs.get("model_path")
        untrained = bool(model_path and os.path.isdir(model_path) and read_marker(model_path).get("untrained"))
        self = cls(
            automodel, model_id=model, revision=revision, untrained=untrained, autocast_dtype=_autocast_dtype(device)
        )
        self._warm_up()
        return self

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
        import torch

        return str(self._autocast_dtype or torch.float32).removeprefix("torch.")

    @property
    def untrained(self) -> bool:
        return self._untrained

    @property
    def labels(self) -> list[str]:
        return list(LABELS)

    @property
    def embed_dim(self) -> int:
        return int(self._live_module().proj.in_features)

    def info(self) -> dict:
        """Which model produced a result: goes into every output."""
        return {
            "id": self.model_id,
            "revision": self.revision,
            "device": self.device,
            "dtype": self.dtype,
            "untrained": self.untrained,
        }

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
        """
        import torch

        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, not {granularity!r}")
        samples = check_samples(np.ascontiguousarray(samples, dtype=np.float32).reshape(-1))
        bounds = window_bounds(samples.size, window_s, sample_rate=SAMPLE_RATE)
        with self._lock:
            try:
                windows = [self._window(samples[a:b], frames=granularity == "frame") for a, b in bounds]
                total = sum(w["n"] for w in windows)
                if len(windows) == 1:
                    mean = windows[0]["mean"]
                else:  # frame-count-weighted mean of window means = mean over all frames
                    mean = sum(w["mean"].double() * w["n"] for w in windows).float() / total
                scores = self._scores(mean)
                if not torch.isfinite(mean).all():  # never store NaN as a result
                    raise ServerFault(f"the model's output is not finite for {samples.size / SAMPLE_RATE:.1f} s "
                                      "of audio", code="model_output_not_finite")
            except torch.cuda.OutOfMemoryError as exc:
                self._empty_cache()
                raise TransientFault(
                    f"CUDA ran out of memory scoring {samples.size / SAMPLE_RATE:.1f} s of audio: retry later",
                    code="cuda_oom",
                ) from exc
        out = _summary(scores)
        out["timeline"] = [
            {"start": a / SAMPLE_RATE, "end": b / SAMPLE_RATE, **_summary(w["scores"], top_score=False)}
            for (a, b), w in zip(bounds, windows)
        ]
        out["duration_s"] = samples.size / SAMPLE_RATE
        out["frame_rate"] = FRAME_RATE
        if embedding:
            out["embedding"] = mean[0].cpu().tolist()
        if granularity == "frame":
            out["frames"] = [row for w in windows for row in w["frames"].tolist()]
        out["model"] = self.info()
        return out

    def close(self) -> None:
        """Free the model (and CUDA's cached blocks)."""
        self._module = None
        self._automodel = None
        gc.collect()
        self._empty_cache()

    # -- internals -------------------------------------------------------------------------------

    def _live_module(self):
        if self._module is None:
            raise RuntimeError("the emotion model was closed")
        return self._module

    def _window(self, window: np.ndarray, *, frames: bool) -> dict:
        """funasr's Emotion2vec.inference for one window: layer-normed waveform -> frame features."""
        import torch
        import torch.nn.functional as F

        module = self._live_module()
        device = next(module.parameters()).device
        with torch.inference_mode():
            source = torch.from_numpy(window).to(device)
            if module.cfg.normalize:
                source = F.layer_norm(source, source.shape)
            source = source.view(1, -1)
            with self._autocast(device):
                x = module.extract_features(source, padding_mask=None)["x"]
            x = x.float()  # (1, T, D)
            mean = x.mean(dim=1)
            return {
                "n": x.shape[1],
                "mean": mean,
                "scores": self._scores(mean),
                "frames": x[0].cpu() if frames else None,
            }

    def _scores(self, mean):
        """Softmax over the nine classes from a (1, D) mean feature, in float32."""
        import torch

        with torch.inference_mode():
            logits = self._live_module().proj(mean)
            return torch.softmax(logits, dim=-1)[0].cpu().tolist()

    def _autocast(self, device):
        import torch

        if self._autocast_dtype is None or device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self._autocast_dtype)

    def _warm_up(self) -> None:
        """One short forward pass, so that the first request does not pay for lazy initialisation."""
        noise = np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32) * 0.1
        self.predict(noise)

    def _empty_cache(self) -> None:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()


def _summary(scores: list[float], *, top_score: bool = True) -> dict:
    top = int(np.argmax(scores))
    out = {"scores": dict(zip(LABELS, (float(s) for s in scores))), "top_label": LABELS[top]}
    if top_score:
        out["top_score"] = float(scores[top])
    return out


def _local_dir(model: str) -> Path | None:
    """The directory ``model`` names, None for a hub id; ConfigurationError for a path that is not a model."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not ((path / "config.yaml").is_file() or (path / "configuration.json").is_file()):
            raise ConfigurationError(
                f"{model!r} holds no config.yaml: point the model setting at an emotion2vec directory "
                "(python -m emotionq.inference.checkpoint DIR writes an untrained one)"
            )
        return path.resolve()
    if model.startswith((".", "~", os.sep)) or path.exists():
        raise ConfigurationError(f"{model!r} is not a model directory: fix the path or name a hub id")
    return None


def _check_module(automodel, model: str) -> None:
    """Refuse what is not emotion2vec with the nine-class head, and heads funasr left random."""
    module = automodel.model
    if not hasattr(module, "extract_features") or getattr(module, "proj", None) is None:
        raise ConfigurationError(f"{model!r} is not emotion2vec with a classification head: use an emotion2vec+ model")
    tokens = list(getattr(automodel.kwargs.get("tokenizer"), "token_list", None) or [])
    if [english(t) for t in tokens] != list(LABELS) or module.proj.out_features != len(LABELS):
        raise ConfigurationError(
            f"{model!r} has labels {tokens}, not the nine emotion2vec+ classes: pin a revision of an emotion2vec+ model"
        )
    missing = unmatched_keys(module, automodel.kwargs.get("init_param", ""), automodel.kwargs.get("scope_map") or [])
    if missing and any(k.startswith("proj.") for k in missing):
        raise ConfigurationError(
            f"the checkpoint of {model!r} lacks the classification head ({len(missing)} keys unmatched): "
            "check the model directory or revision"
        )
    if missing:
        log.warning("%d weights of %s were not in its checkpoint and stay random: %s", len(missing), model, missing[:5])


def _autocast_dtype(device: str):
    """bf16 where the GPU supports it, else fp16; None (fp32) on CPU."""
    import torch

    if not device.startswith("cuda"):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
