"""The CPU runtime: emotion2vec's forward on onnxruntime, from graphs exported at worker start.

``choose`` decides, once per loaded model and before the model is built with it, which runtime
(``contract.Runtime``) runs the encoder on a CPU: ``OnnxRuntime`` (the graphs of
``emotionq.inference.export`` on onnxruntime, fp32 or quantized to int8) or ``encoder.TorchRuntime``
(funasr's torch module). The setting (``EMOTIONQ_RUNTIME``) is ``torch``, ``onnx``, ``onnx-int8`` (opt-in:
``emotionq.inference.quantization``), or ``auto``: the faster of torch and fp32 onnx on a probe batch,
among those that pass the check. CUDA always runs torch (autocast).

- Cache (``emotionq.inference.graphcache``): ``<cache_dir>/<model>-<id hash>/`` holds the graphs and a
  manifest of the key (the weights as funasr loaded them, the config, the software's versions) and each
  file's sha256. A stale or corrupt entry, or one onnxruntime cannot load, is rebuilt under a file lock,
  never used.
- Check: a probe batch (two windows of different lengths, so padding is exercised) through the
  graphs against funasr's own ``generate`` on each window alone: scores and embeddings within
  ``TOLERANCE``, frames within ``TOLERANCE`` x their largest magnitude (float32 torch itself is
  about 1e-5 away from a float64 forward there: see tests/inference/test_runtime.py). A cached
  graph that fails is rebuilt and checked again; a fresh one that fails leaves torch running,
  with the reason logged and reported in ``ModelInfo.runtime_note``.
- int8 (``onnx-int8``): the checked fp32 graphs quantized (``quantization.RECIPE``) into
  ``<entry>-int8/``, cached the same way (its key: the fp32 key and the recipe), checked against
  funasr's fp32 output on real speech within ``quantization.LIMITS``. A cached copy that is corrupt or
  fails the check is rebuilt and checked again; int8 graphs that still fail (or cannot be built) are
  never served: the fp32 graphs run, with the reason logged and in ``runtime_note`` (so in /readyz).
- Memory: one onnxruntime arena for both graphs, shrunk after each run (see ``_register_arena``).
- Threads: onnxruntime's intra-op pool gets the worker's thread count. Once it is chosen, torch
  runs only the input layer norm, the mean and the head, on one thread, so that its OpenMP pool
  does not spin beside onnxruntime's; onnxruntime's pools (one per graph) do not spin either.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from emotionq.errors import ConfigurationError
from emotionq.inference import graphcache, heap
from emotionq.inference.contract import Runtime
from emotionq.inference.encoder import TorchRuntime, score_windows

RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")
TORCH = "torch"
ONNXRUNTIME = "onnxruntime"
ONNXRUNTIME_INT8 = "onnxruntime-int8"  # ModelInfo.runtime of the int8 graphs (dtype "int8")
TOLERANCE = 1e-5
PROBE_S = (3.1, 1.3)  # seconds of the probe windows: not the export's trace lengths

log = logging.getLogger(__name__)


class OnnxRuntime:
    """The exported graphs on onnxruntime: conv features per window, then the padded batch."""

    def __init__(self, paths: dict[str, Path], *, threads: int, name: str = ONNXRUNTIME, dtype: str = "float32") -> None:
        import onnxruntime as ort

        self.name, self.dtype = name, dtype

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.use_env_allocators", "1")  # one arena for both graphs
        options.log_severity_level = 3  # errors only: its warnings are about the graph optimiser
        _register_arena(ort)
        providers = ["CPUExecutionProvider"]
        self._local = ort.InferenceSession(str(paths["local"]), options, providers=providers)
        self._context = ort.InferenceSession(str(paths["context"]), options, providers=providers)
        self._run_options = ort.RunOptions()
        self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self.threads = threads

    @property
    def sessions(self) -> tuple:
        """The two onnxruntime sessions (conv features, context), for checks of their options."""
        return self._local, self._context

    def features(self, sources: list) -> tuple:
        """Frames (B, T, D) torch float32 of layer-normed windows (1-D torch tensors), and each one's frame count."""
        import torch

        local = [self._local.run(None, {"source": s.numpy()[None]}, self._run_options)[0] for s in sources]
        counts = [f.shape[1] for f in local]
        if len(local) == 1:
            batch = local[0]
        else:
            batch = np.zeros((len(local), max(counts), local[0].shape[2]), dtype=np.float32)
            for row, f in zip(batch, local):
                row[: f.shape[1]] = f[0]
        padding_mask = np.arange(batch.shape[1])[None, :] >= np.asarray(counts)[:, None]
        [frames] = self._context.run(None, {"features": batch, "padding_mask": padding_mask}, self._run_options)
        return torch.from_numpy(frames), counts

    def close(self) -> None:
        self._local = self._context = None


_arena_registered = False


def _register_arena(ort) -> None:
    """One CPU arena for the process's sessions, grown by what is asked (not to the next power of two)
    and shrunk after every run: two per-session arenas kept their peaks, grew with every new length and
    held 1.6 GB after a few 30 s windows of the large model; this one peaks at ~0.7 GB and holds 0.2 GB."""
    global _arena_registered
    if _arena_registered:
        return
    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))  # no limit; 1 = kSameAsRequested
    _arena_registered = True


def choose(automodel, torch_runtime: TorchRuntime, *, model_id: str, setting: str, cache_dir: str | Path | None,
           threads: int) -> tuple[Runtime, str]:
    """The runtime for funasr's CPU ``automodel`` (just loaded; ``torch_runtime`` runs its module) and a note on why.

    Never raises for a graph that cannot be built or checked: torch keeps running.
    """
    if setting not in RUNTIMES:
        raise ConfigurationError(f"unknown runtime {setting!r}: choose one of {', '.join(RUNTIMES)}")
    if setting == TORCH:
        return torch_runtime, "asked for"
    started = time.perf_counter()
    entry = graphcache.cache_entry(Path(cache_dir or graphcache.default_cache_dir()), model_id)
    try:
        onnx, how, key = _checked(automodel, model_id, entry, threads)
    except Exception as exc:  # noqa: BLE001 - any failure to build, load or match leaves torch running
        reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
        if isinstance(exc, ImportError):
            reason = f"it cannot be imported ({reason}): install the onnxruntime that setup.cfg pins"
        log.warning("onnxruntime is not used for %s, torch runs instead: %s", model_id, reason)
        return torch_runtime, f"onnxruntime failed: {reason}"
    if setting == "auto":
        onnx_s = _time(automodel.model, onnx)
        torch_s = _time(automodel.model, torch_runtime)
        if onnx_s >= torch_s:
            log.info("torch runs %s: the probe took %.0f ms on torch, %.0f ms on onnxruntime",
                     model_id, torch_s * 1e3, onnx_s * 1e3)
            return torch_runtime, f"faster on the probe: torch {torch_s * 1e3:.0f} ms, onnxruntime {onnx_s * 1e3:.0f} ms"
        how += f"; probe torch {torch_s * 1e3:.0f} ms, onnxruntime {onnx_s * 1e3:.0f} ms"
    if setting == "onnx-int8":
        onnx, how = _int8_or_fp32(automodel, onnx, how, model_id=model_id, entry=entry, key=key, threads=threads)
    import torch

    torch.set_num_threads(1)  # torch now runs only the layer norm, mean and head: keep its pool idle
    freed = release_weights(automodel.model)
    how += f"; torch's copies of the graphs' weights released ({freed / 2**20:.0f} MB)"
    log.info("onnxruntime runs %s (%d threads): %s, in %.1f s", model_id, threads, how,
             time.perf_counter() - started)
    return onnx, how


def release_weights(module) -> int:
    """Empty torch's copies of every weight but the ``proj`` head (onnxruntime holds its own); bytes freed.

    The module keeps its structure (device, config, head), but its encoder and blocks cannot run any more.
    """
    import gc

    import torch

    keep = {id(p) for p in module.proj.parameters()}
    freed = 0
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if id(tensor) not in keep and tensor.numel():
                freed += tensor.numel() * tensor.element_size()
                tensor.data = torch.empty(0, dtype=tensor.dtype, device=tensor.device)
    module.alibi_biases.clear()
    gc.collect()
    heap.trim()
    return freed


def load_graphs(module, entry: Path, *, threads: int, rebuild: bool = False,
                key: str | None = None) -> tuple[OnnxRuntime, str]:
    """The graphs of ``module`` in ``entry``, built (again) unless a valid cached copy is there; and how they came."""
    from emotionq.inference.export import export

    key = key or graphcache.cache_key(module)
    return graphcache.cached(entry, key, lambda directory: export(module, directory),
                             lambda paths: OnnxRuntime(paths, threads=threads), rebuild=rebuild, verb="exported")


def int8_entry(entry: Path) -> Path:
    """Where the int8 graphs made from the fp32 graphs in ``entry`` are cached."""
    return entry.with_name(entry.name + "-int8")


def load_int8_graphs(entry: Path, key: str, *, threads: int, normalized: bool,
                     rebuild: bool = False) -> tuple[OnnxRuntime, str]:
    """The int8 graphs quantized from the (valid) fp32 graphs in ``entry``, whose key is ``key``: cached in
    ``int8_entry(entry)`` under ``quantization.cache_key(key)``, quantized (again) unless a valid copy is there."""
    from emotionq.inference.quantization import cache_key as int8_key
    from emotionq.inference.quantization import quantize

    return graphcache.cached(int8_entry(entry), int8_key(key),
                             lambda directory: quantize(graphcache.paths(entry), directory, normalized=normalized),
                             lambda paths: OnnxRuntime(paths, threads=threads, name=ONNXRUNTIME_INT8, dtype="int8"),
                             rebuild=rebuild, verb="quantized")


def check(automodel, runtime: Runtime) -> dict[str, float]:
    """Largest differences of ``runtime`` on the probe batch from funasr's ``generate`` (``automodel``'s) alone."""
    windows = _probe()
    ours = score_windows(automodel.model, runtime, windows, [True] * len(windows))
    worst = {"scores": 0.0, "embedding": 0.0, "frames": 0.0, "frames_scale": 1.0}
    for window, got in zip(windows, ours):
        [ref] = automodel.generate(window, granularity="frame", extract_embedding=True)
        frames = np.asarray(ref["feats"], dtype=np.float64)
        if got["frames"].shape != frames.shape:
            raise RuntimeError(f"{got['frames'].shape[0]} frames where funasr gives {frames.shape[0]}")
        worst["scores"] = max(worst["scores"], _diff(got["scores"], ref["scores"]))
        worst["embedding"] = max(worst["embedding"], _diff(got["mean"][0].numpy(), frames.mean(axis=0)))
        worst["frames"] = max(worst["frames"], _diff(got["frames"].numpy(), frames))
        worst["frames_scale"] = max(worst["frames_scale"], float(np.abs(frames).max()))
    return worst


def mismatch(worst: dict[str, float]) -> str | None:
    """Why ``check``'s differences are too large, or None."""
    limits = {"scores": TOLERANCE, "embedding": TOLERANCE, "frames": TOLERANCE * worst["frames_scale"]}
    over = [f"{k} differ by {worst[k]:.2e} (limit {v:.1e})" for k, v in limits.items() if not worst[k] <= v]
    return "; ".join(over) or None


# -- internals -------------------------------------------------------------------------------------


def _checked(automodel, model_id: str, entry: Path, threads: int) -> tuple[OnnxRuntime, str, str]:
    """Graphs that pass the check: cached, else (or if the cached ones fail it) freshly exported; and their key."""
    module = automodel.model
    key = graphcache.cache_key(module)
    forward, how = load_graphs(module, entry, threads=threads, key=key)
    problem = mismatch(worst := check(automodel, forward))
    if problem and how == "cached graphs":
        log.warning("the cached onnx graphs of %s fail their check (%s): rebuilding them", model_id, problem)
        forward, how = load_graphs(module, entry, threads=threads, rebuild=True, key=key)
        problem = mismatch(worst := check(automodel, forward))
    if problem:
        raise RuntimeError(f"the exported graphs do not match funasr on the probe: {problem}")
    return forward, f"{how}, check passed (largest differences: scores {worst['scores']:.1e}, " \
                    f"embedding {worst['embedding']:.1e}, frames {worst['frames']:.1e})", key


def _int8_or_fp32(automodel, fp32: OnnxRuntime, how: str, *, model_id: str, entry: Path, key: str,
                  threads: int) -> tuple[OnnxRuntime, str]:
    """The int8 graphs if they pass their check (cached, else or if the cached ones fail, quantized afresh);
    else ``fp32`` (checked already), with the reason logged and in the note. Never raises."""
    from emotionq.inference import quantization

    try:
        normalized = bool(automodel.model.cfg.normalize)  # the model layer-norms its windows: its convs quantize
        int8, how8 = load_int8_graphs(entry, key, threads=threads, normalized=normalized)
        problem = quantization.mismatch(worst := quantization.check(automodel, int8))
        if problem and how8 == "cached graphs":
            log.warning("the cached int8 graphs of %s fail their check (%s): quantizing again", model_id, problem)
            int8, how8 = load_int8_graphs(entry, key, threads=threads, normalized=normalized, rebuild=True)
            problem = quantization.mismatch(worst := quantization.check(automodel, int8))
        if problem:
            raise RuntimeError(f"the int8 graphs do not match funasr's fp32 output on the speech probe: {problem}")
    except Exception as exc:  # noqa: BLE001 - any failure to quantize, load or match leaves fp32 running
        reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
        log.warning("int8 graphs are not used for %s, the fp32 graphs run instead: %s", model_id, reason)
        return fp32, f"int8 failed, fp32 graphs run: {reason}; fp32: {how}"
    fp32.close()
    return int8, (f"int8 {how8}, check passed on {worst['items']} speech probe items (top labels equal, scores "
                  f"within {worst['scores']:.1e}, embedding cosine {worst['cosine']:.5f}); fp32: {how}")


def _probe() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.standard_normal(int(s * 16000)) * 0.1).astype(np.float32) for s in PROBE_S]


def _time(module, runtime: Runtime, runs: int = 2) -> float:
    """Seconds of the fastest of ``runs`` forward passes over the probe batch on ``runtime``."""
    windows = _probe()
    best = float("inf")
    for _ in range(runs):
        began = time.perf_counter()
        score_windows(module, runtime, windows, [False] * len(windows))
        best = min(best, time.perf_counter() - began)
    return best


def _diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


