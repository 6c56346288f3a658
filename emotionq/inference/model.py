"""emotion2vec loaded through funasr's ``AutoModel``: load once, warm up, score audio.

The forward pass is funasr's own (``Emotion2vec.extract_features`` and its
``proj`` head, as ``Emotion2vec.inference`` runs them), under ``torch.autocast``
on CUDA. ``predict`` scores one recording a window at a time; ``predict_batch``
scores the windows of several recordings in padded forward passes that give
what one at a time gives (to float tolerance). torch and funasr are imported
only when a model is loaded.

Padding, and why funasr's own ``padding_mask`` is not enough (the difference
reported in ddlBoJack/emotion2vec issues 37 and 63): attention masks padded
frames out exactly (``-inf`` before the softmax), ALiBi depends only on the
distance between two frames, and the conv feature encoder, its layer norms and
the MLPs work frame by frame, so none of them lets padding into a valid frame.
The positional encoder does: five grouped convolutions (kernel 19) over the
frames, which funasr feeds padded frames that are not zero (the conv features of
zero samples go through layer norms with biases) and whose hidden layers turn
padded frames non-zero again. Alone, a window's convolutions see zeros past its
end; padded, its last ~45 frames see the padding, and through attention every
frame changes. ``_zeroed_padding`` zeroes padded frames before each of those
convolutions, which makes a padded window's frames those it gets alone.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
from pathlib import Path

import numpy as np

from emotionq.errors import AudioError, ConfigurationError, ServerFault, TransientFault
from emotionq.inference import heap
from emotionq.inference.audio import SAMPLE_RATE, check_samples
from emotionq.inference.checkpoint import read_marker, unmatched_keys
from emotionq.inference.labels import LABELS, english
from emotionq.inference.windows import FRAME_STRIDE, window_bounds

FRAME_RATE = SAMPLE_RATE // FRAME_STRIDE  # 50 frames per second
GRANULARITIES = ("utterance", "frame")
OPTIONS = ("granularity", "embedding")  # predict's per-recording options
# Padded seconds of audio per forward pass of predict_batch. On a GPU big passes keep it busy (four
# 30 s windows). On a CPU they lose: past ~16 padded seconds the attention's batch x heads x T^2
# tensors outgrow the caches and a pass runs slower than its windows one at a time, while
# under it batching short windows pays (the weights are read once for all of them); see
# benchmarks/batching.py.
MAX_BATCH_S = {"cuda": 120.0, "cpu": 16.0}
MAX_PAD_RATIO = 1.25  # padded samples of a forward pass / its real samples, at most

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
        self._runtime = None  # what runs the forward pass in place of the module (runtime.OnnxForward); None: torch
        self._runtime_note = ""

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

        On a CPU, ``runtime`` (auto, torch, onnx) chooses what runs the forward pass, with onnx graphs
        cached in ``runtime_cache_dir`` (see ``emotionq.inference.runtime``); CUDA always runs torch.
        """
        import torch

        from emotionq.inference.runtime import RUNTIMES

        if runtime not in RUNTIMES:
            raise ConfigurationError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")

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
        if device.startswith("cuda"):
            self._runtime_note = "CUDA runs torch under autocast"
            if runtime == "onnx":
                log.warning("runtime onnx is for CPU workers: %s runs torch under autocast on %s", model, device)
        else:
            from emotionq.inference.runtime import choose

            self._runtime, self._runtime_note = choose(self, setting=runtime, cache_dir=runtime_cache_dir,
                                                       threads=threads or torch.get_num_threads())
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
    def runtime(self) -> str:
        """What runs the forward pass: "onnxruntime" or "torch"."""
        return self._runtime.name if self._runtime is not None else "torch"

    @property
    def runtime_note(self) -> str:
        """Why that runtime: its check, timings, or the reason onnxruntime was not used."""
        return self._runtime_note

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
            "runtime": self.runtime,
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

    def predict_batch(
        self,
        items: list[np.ndarray],
        *,
        options: list[dict] | None = None,
        window_s: float = 30.0,
        max_batch_windows: int = 16,
        max_batch_s: float | None = None,
    ) -> list[dict | Exception]:
        """Score several recordings in shared forward passes.

        Each result is what ``predict(items[i], **options[i], window_s=window_s)`` returns
        (same keys, same semantics, equal to float tolerance), or the exception it would raise
        for that item alone (AudioError from ``check_samples``, ValueError for a bad
        granularity, ServerFault for a non-finite output), so one bad item fails alone.
        A CUDA out-of-memory error raises TransientFault(code="cuda_oom") for the whole call
        (retry with fewer items or a smaller ``max_batch_windows``); a bad ``window_s`` raises
        ValueError.

        Every item is cut into windows as ``predict`` cuts it (``window_bounds``); the windows
        of all items are sorted longest first and grouped greedily, in that order, into forward
        passes (``group_windows``): a pass holds at most ``max_batch_windows`` windows, at most
        ``max_batch_s`` seconds of padded audio (windows x its longest window; a single window
        longer than that still gets a pass of its own; unset: ``MAX_BATCH_S`` for the device,
        120 on CUDA, 16 on CPU), and at most ``MAX_PAD_RATIO`` (1.25)
        times its real samples. Windows are layer-normed alone, zero-padded, and scored with a
        sample-level ``padding_mask``; the positional convolution sees zeros at padded frames
        (see ``_zeroed_padding``), so a window's frames are those it gets alone.
        """
        import torch

        if max_batch_windows < 1:
            raise ValueError(f"max_batch_windows must be at least 1, not {max_batch_windows}")
        if options is not None and len(options) != len(items):
            raise ValueError(f"{len(options)} options for {len(items)} items")
        window_bounds(0, window_s)  # ValueError for a bad window_s, for the whole call
        if max_batch_s is None:
            max_batch_s = MAX_BATCH_S["cuda" if self.device.startswith("cuda") else "cpu"]
        results: list[dict | Exception | None] = [None] * len(items)
        jobs: list[dict] = []  # one per item that passed its checks
        for index, samples in enumerate(items):
            try:
                job = _job(index, samples, (options or [None] * len(items))[index], window_s)
            except (AudioError, ValueError, TypeError) as exc:
                results[index] = exc
                continue
            jobs.append(job)
        windows = [(job, a, b) for job in jobs for a, b in job["bounds"]]
        if not windows:
            return results
        with self._lock:
            try:
                scored = self._score_windows(
                    [job["samples"][a:b] for job, a, b in windows],
                    frames=[job["granularity"] == "frame" for job, _, _ in windows],
                    max_batch_windows=max_batch_windows,
                    max_batch_s=max_batch_s,
                )
                per_job: dict[int, list[dict]] = {}
                for (job, _, _), window in zip(windows, scored):
                    per_job.setdefault(job["index"], []).append(window)
                for job in jobs:
                    results[job["index"]] = self._combine(job, per_job[job["index"]])
            except torch.cuda.OutOfMemoryError as exc:
                self._empty_cache()
                seconds = sum(b - a for _, a, b in windows) / SAMPLE_RATE
                raise TransientFault(
                    f"CUDA ran out of memory scoring {seconds:.1f} s of audio in {len(jobs)} recordings: "
                    "retry later, or with fewer recordings at once",
                    code="cuda_oom",
                ) from exc
            finally:
                self._trim_alibi_cache()
        return results

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

    def _score_windows(
        self, windows: list[np.ndarray], *, frames: list[bool], max_batch_windows: int, max_batch_s: float
    ) -> list[dict]:
        """Score windows in the forward passes ``group_windows`` forms; results in input order."""
        groups = group_windows(
            [w.size for w in windows], max_windows=max_batch_windows, max_samples=int(max_batch_s * SAMPLE_RATE)
        )
        scored: list[dict | None] = [None] * len(windows)
        for group in groups:
            for i, result in zip(group, self._forward([windows[i] for i in group], [frames[i] for i in group])):
                scored[i] = result
            if len(group) * windows[group[0]].size >= heap.TRIM_AFTER_S * SAMPLE_RATE:  # a big pass: its memory
                heap.trim()  # goes back to the system, not into the next pass's peak
        return scored

    def _forward(self, windows: list[np.ndarray], frames: list[bool]) -> list[dict]:
        """funasr's Emotion2vec.inference for several windows in one pass: per window ``n`` (its
        frame count), ``mean`` (1 x D float32, over its valid frames), ``scores``, ``frames`` (n x D or None).

        Each window is layer-normed over its own samples, then zero-padded to the longest; the
        sample-level ``padding_mask`` (True = padding) keeps padded frames out of attention and
        ``_zeroed_padding`` out of the positional convolution. Valid frames are those the model's
        returned ``padding_mask`` leaves False (funasr's conv output-length formula). Where a CPU
        runtime was chosen at load (``self._runtime``), its graphs give the frames instead of the
        module, the same way (``emotionq.inference.runtime``); the mean and the head stay here.
        """
        import torch
        import torch.nn.functional as F

        module = self._live_module()
        device = next(module.parameters()).device
        with torch.inference_mode():
            sources = []
            for window in windows:
                source = torch.from_numpy(window).to(device)
                if module.cfg.normalize:
                    source = F.layer_norm(source, source.shape)
                sources.append(source)
            if self._runtime is not None:  # exported graphs in place of the module (emotionq.inference.runtime)
                x, counts = self._runtime.features(sources)
            else:
                x, counts = self._torch_features(module, sources, device)
            results = []
            for i, n in enumerate(counts):
                valid = x[i, :n]  # the valid frames come first
                mean = valid.mean(dim=0, keepdim=True)
                results.append(
                    {"n": n, "mean": mean, "scores": self._scores(mean), "frames": valid.cpu() if frames[i] else None}
                )
            return results

    def _torch_features(self, module, sources, device):
        """The module's frames (B, T, D) float32 of layer-normed windows, zero-padded, and each one's frame count."""
        import torch

        lengths = [s.numel() for s in sources]
        if len(set(lengths)) == 1:
            batch, padding_mask = torch.stack(sources), None
        else:
            batch = sources[0].new_zeros(len(sources), max(lengths))
            for row, source in zip(batch, sources):
                row[: source.numel()] = source
            padding_mask = torch.arange(batch.shape[1], device=device)[None, :] >= torch.tensor(
                lengths, device=device
            )[:, None]
        with self._autocast(device), _local_features_per_window(module, lengths), _zeroed_padding(
            module, padding_mask
        ):
            out = module.extract_features(batch, padding_mask=padding_mask)
        x = out["x"].float()  # (B, T, D)
        pad = out["padding_mask"]  # (B, T) True = padded frame, or None
        counts = [x.shape[1]] * len(sources) if pad is None else (~pad).sum(dim=-1).tolist()
        return x, counts

    def _combine(self, job: dict, windows: list[dict]) -> dict | ServerFault:
        """One recording's result from its scored windows, as ``predict`` returns it."""
        import torch

        samples, bounds = job["samples"], job["bounds"]
        if len(windows) == 1:
            mean = windows[0]["mean"]
        else:  # frame-count-weighted mean of window means = mean over all frames
            total = sum(w["n"] for w in windows)
            mean = sum(w["mean"].double() * w["n"] for w in windows).float() / total
        if not torch.isfinite(mean).all():  # never store NaN as a result
            return ServerFault(f"the model's output is not finite for {samples.size / SAMPLE_RATE:.1f} s "
                               "of audio", code="model_output_not_finite")
        out = _summary(self._scores(mean))
        out["timeline"] = [
            {"start": a / SAMPLE_RATE, "end": b / SAMPLE_RATE, **_summary(w["scores"], top_score=False)}
            for (a, b), w in zip(bounds, windows)
        ]
        out["duration_s"] = samples.size / SAMPLE_RATE
        out["frame_rate"] = FRAME_RATE
        if job["embedding"]:
            out["embedding"] = mean[0].cpu().tolist()
        if job["granularity"] == "frame":
            out["frames"] = [row for w in windows for row in w["frames"].tolist()]
        out["model"] = self.info()
        return out

    def _trim_alibi_cache(self) -> None:
        """Shrink funasr's ALiBi cache back to one batch row.

        funasr caches the bias as (largest batch seen x heads) x T x T for the longest T seen and
        never shrinks it, so a batch of short windows followed by one long window would keep
        batch x heads x T^2 floats for good; one row is what single windows need.
        """
        module = self._module
        if module is None:
            return
        heads = module.modality_encoders["AUDIO"].modality_cfg.num_alibi_heads
        for key, cached in list(module.alibi_biases.items()):
            if cached.size(0) > heads:  # get_alibi(T, heads).repeat(batch, 1, 1): the first rows are one copy
                module.alibi_biases[key] = cached[:heads].clone()

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


def group_windows(
    lengths: list[int], *, max_windows: int, max_samples: int, max_pad_ratio: float = MAX_PAD_RATIO
) -> list[list[int]]:
    """Forward passes for windows of ``lengths`` samples: lists of indices, longest window first.

    Windows are sorted longest first (ties in input order) and taken greedily in that order:
    a window joins the current pass while the pass then holds at most ``max_windows`` windows,
    at most ``max_samples`` padded samples (windows x its first, longest, window) and at most
    ``max_pad_ratio`` x its real samples; otherwise it starts the next pass. A window that
    alone exceeds ``max_samples`` gets a pass of its own. Memory per pass is bounded by the
    padded samples (conv encoder) and by padded samples x longest window (attention).
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    groups: list[list[int]] = []
    real = 0
    for i in order:
        if groups:
            group = groups[-1]
            padded = (len(group) + 1) * lengths[group[0]]
            if (
                len(group) < max_windows
                and padded <= max_samples
                and padded <= max_pad_ratio * (real + lengths[i])
            ):
                group.append(i)
                real += lengths[i]
                continue
        groups.append([i])
        real = lengths[i]
    return groups


def _job(index: int, samples: np.ndarray, options: dict | None, window_s: float) -> dict:
    """One recording of predict_batch, checked as predict checks it, with its windows."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"unknown options {unknown}: predict takes {', '.join(OPTIONS)}")
    granularity = options.get("granularity", "utterance")
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, not {granularity!r}")
    samples = check_samples(np.ascontiguousarray(samples, dtype=np.float32).reshape(-1))
    return {
        "index": index,
        "samples": samples,
        "bounds": window_bounds(samples.size, window_s, sample_rate=SAMPLE_RATE),
        "granularity": granularity,
        "embedding": bool(options.get("embedding", False)),
    }


@contextlib.contextmanager
def _local_features_per_window(module, lengths: list[int]):
    """Run the conv feature encoder on each window alone, over its own samples only.

    The encoder works frame by frame (convolutions without padding, per-frame layer norms), so a
    window's frames are the same alone or in a batch; but on a batch its activations (512
    channels at 1/5 of the sample rate, x windows) outgrow the CPU caches, and it ran about half
    again slower per window than one window at a time. Per window it keeps that speed, skips
    the padding, and leaves padded frames zero (attention and ``_zeroed_padding`` ignore them).
    The transformer, where batching pays, still sees the whole batch.
    """
    encoder = module.modality_encoders["AUDIO"]
    if len(lengths) == 1:
        yield
        return
    local_features = encoder.local_features  # the bound method funasr's forward calls

    def per_window(features):  # (B, S) -> (B, T, D)
        rows = [local_features(features[i : i + 1, :n]) for i, n in enumerate(lengths)]
        out = rows[0].new_zeros(len(rows), max(r.shape[1] for r in rows), rows[0].shape[2])
        for i, row in enumerate(rows):
            out[i, : row.shape[1]] = row[0]
        return out

    encoder.local_features = per_window  # an instance attribute, for this call only (under the model lock)
    try:
        yield
    finally:
        del encoder.local_features


@contextlib.contextmanager
def _zeroed_padding(module, padding_mask):
    """Zero padded frames at the input of each convolution of the positional encoder.

    Alone, a window's positional convolutions see zeros past its end (their own zero padding);
    padded in a batch they would see padded frames, which are not zero. The frame-level mask is
    the model's own (``AudioEncoder.convert_padding_mask``), the one its attention uses.
    """
    import torch

    encoder = module.modality_encoders["AUDIO"]
    positional = encoder.relative_positional_encoder
    if padding_mask is None or positional is None:
        yield
        return
    masks: dict[int, torch.Tensor] = {}

    def zero(conv, args):
        (x,) = args  # (B, D, T)
        if x.shape[-1] not in masks:
            frame_mask = encoder.convert_padding_mask(x.transpose(1, 2), padding_mask)  # (B, T), True = padded
            masks[x.shape[-1]] = frame_mask[:, None, :]
        return (x.masked_fill(masks[x.shape[-1]], 0),)

    handles = [m.register_forward_pre_hook(zero) for m in positional.modules() if isinstance(m, torch.nn.Conv1d)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


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
