"""A fresh process doing what a worker's pool child does with jobs, without the service around it.

``python -m benchmarks.child --model DIR --threads N [--runtime auto|torch|onnx|onnx-int8] [--cache-dir D]
[--outputs] CLIP...``
loads the model as the worker does (``EmotionModel.load(model, threads=N, runtime=...)``:
torch.set_num_threads(N), the runtime's export or cache and check, warm-up included), resets the
peak-RSS mark (VmHWM, via /proc/self/clear_refs), decodes every clip as ``scoring.score_run`` does,
then predicts them one by one, and prints one JSON line: load_s, rss_loaded_mb, peak_mb (VmHWM
since the reset: decode + inference), peak_reset, predict_cpu_s and machine_busy_s (this process's
CPU time and all cores' busy time during the predict loop: their difference is what else ran), runtime
and runtime_note (what ran the forward pass, and why), and per clip duration_s, decode_s, predict_s (and with
``--outputs`` its scores, in label order, and embedding).

``--loop funasr`` is the bare funasr loop instead: ``funasr.AutoModel(model, ncpu=N)`` and its own
``generate`` per clip (torch eager, one window: clips up to the window length), no EmotionModel.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from pathlib import Path


def status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def machine_busy_s() -> float:
    """CPU seconds all cores have been busy since boot (/proc/stat: all but idle and iowait)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid``, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak() -> bool:
    """Set VmHWM back to the current RSS (Linux >= 4.0); False where that is refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--runtime", default="auto", help="EmotionModel.load's runtime: auto, torch, onnx or onnx-int8")
    parser.add_argument("--cache-dir", default=None, help="where the onnx graphs are cached")
    parser.add_argument("--loop", choices=["model", "funasr"], default="model",
                        help="model: EmotionModel.predict (the worker's path); funasr: AutoModel.generate")
    parser.add_argument("--outputs", action="store_true",
                        help="give each clip's scores (label order) and embedding, for fidelity figures")
    parser.add_argument("clips", nargs="+")
    args = parser.parse_args()

    from emotionq.inference import EmotionModel
    from emotionq.inference.audio import SAMPLE_RATE, decode
    from emotionq.settings import get_settings

    settings = get_settings()
    started = time.perf_counter()
    if args.loop == "funasr":
        from funasr import AutoModel

        automodel = AutoModel(model=args.model, device="cpu", ncpu=args.threads, disable_update=True,
                              disable_pbar=True)

        def predict(samples, window_s):
            [out] = automodel.generate(samples, granularity="utterance", extract_embedding=args.outputs)
            return {"scores": [float(x) for x in out["scores"]],
                    "embedding": [float(x) for x in out["feats"]] if args.outputs else None}

        out = {"load_s": time.perf_counter() - started, "runtime": "funasr (torch eager)", "runtime_note": ""}
    else:
        model = EmotionModel.load(args.model, threads=args.threads, runtime=args.runtime,
                                  runtime_cache_dir=args.cache_dir)
        def predict(samples, window_s):
            out = model.predict(samples, window_s=window_s, embedding=args.outputs)
            return {"scores": list(out["scores"].values()), "embedding": out.get("embedding")}
        out = {"load_s": time.perf_counter() - started, "runtime": model.runtime, "runtime_note": model.runtime_note}
    gc.collect()
    out["rss_loaded_mb"] = status_mb("VmRSS")
    out["hwm_load_mb"] = status_mb("VmHWM")
    out["peak_reset"] = reset_peak()
    clips = []
    for path in args.clips:
        started = time.perf_counter()
        samples = decode(path, max_seconds=settings.max_audio_seconds)
        clips.append({"path": path, "duration_s": samples.size / SAMPLE_RATE, "samples": samples,
                      "decode_s": time.perf_counter() - started})
    busy, cpu = machine_busy_s(), time.process_time()
    for clip in clips:
        samples = clip.pop("samples")
        started = time.perf_counter()
        scored = predict(samples, window_s=settings.window_seconds)
        clip["predict_s"] = time.perf_counter() - started
        if args.outputs:
            clip.update(scored)
        del samples
    out["predict_cpu_s"], out["machine_busy_s"] = time.process_time() - cpu, machine_busy_s() - busy
    out["peak_mb"] = status_mb("VmHWM")
    out["clips"] = clips
    print(json.dumps(out))


if __name__ == "__main__":
    main()
