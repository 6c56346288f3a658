"""Speech segments: what the VAD costs next to the model, and what scoring segments does to a worker's rate.

1. The long mix: a call-like recording (espeak-ng turns of 1.5 to 4 s with 0.5 to 3 s of silence between
   them; 5 minutes, 1 with --quick), scored in-process by the large checkpoint on the worker's CPU runtime.
   VAD time (Silero on onnxruntime, then librosa's cuts of long spans) as a share of the model's time on
   the segments it found (target <= 5 %); and the model's time on the same file in fixed windows.
2. Worker drain rate: a backlog of short recordings (one or two turns with silence around them, 2.5 to 7 s)
   drained by one worker with batches of 8, scored as VAD segments vs fixed windows. Clips/s from the jobs'
   own timestamps (first started -> last finished), so model loading is not counted.
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.common import ONNX_CACHE, THREADS, Context, Row, checkpoint, finish_all, service, submit_all, ts

NAME = "segments"
TEXTS = ["I can't believe you did that again.", "Please tell me what happened this morning.", "Thank you.",
         "I am very angry about my bill.", "Hello, this is the agent speaking.", "Could you say that once more?"]
GAPS_S = (0.5, 1.2, 3.0, 0.8, 2.0, 1.5)


def run(ctx: Context) -> list[Row]:
    work = ctx.workdir(NAME)
    model = checkpoint("large")
    rows = _vad_share(ctx, work, model)
    rows += _drain(ctx, work, model)
    return rows


def _turns(k: int, seconds: float) -> list:
    """Turns and silences, starting at text ``k``, until ``seconds`` are spoken or silent (roughly)."""
    out: list = [0.4]
    total, i = 0.4, k
    while total < seconds:
        out += [TEXTS[i % len(TEXTS)], GAPS_S[i % len(GAPS_S)]]
        total += 2.2 + GAPS_S[i % len(GAPS_S)]
        i += 1
    return out


def _vad_share(ctx: Context, work: Path, model_dir: Path, *, runtime: str = "auto") -> list[Row]:
    from audio_factory import make_turns  # tests/ is on the path once benchmarks.common is imported
    from emotionq.inference import EmotionModel, decode
    from emotionq.inference.segmented import model_options, tracks

    seconds = 60.0 if ctx.quick else 300.0
    path = work / "long-mix.wav"
    make_turns(path, _turns(0, seconds))
    samples = decode(path)
    model = EmotionModel.load(str(model_dir), threads=THREADS, runtime=runtime, runtime_cache_dir=ONNX_CACHE)
    options = {"segmentation": "vad", "channels": "mix"}
    tracks([samples[:16000]], options, window_s=30)  # the detector's session, loaded once per worker
    vad = min(_timed(lambda: tracks([samples], options, window_s=30))[0] for _ in range(3))
    plan = tracks([samples], options, window_s=30)
    [track] = plan.tracks
    seg_s, _ = _timed(lambda: model.predict_batch([samples], options=[model_options(options, track, plan)],
                                                  max_batch_windows=16))
    fixed_s, _ = _timed(lambda: model.predict_batch([samples], max_batch_windows=16))
    speech = plan.audio_s()
    ctx.detail(NAME)["long mix"] = {
        "audio_s": samples.size / 16000, "speech_s": speech, "segments": len(track.bounds), "vad_s": vad,
        "inference_segments_s": seg_s, "inference_fixed_s": fixed_s, "runtime": model.runtime}
    model.close()
    note = (f"{samples.size / 16000:.0f} s call-like mix, {speech:.0f} s speech in {len(track.bounds)} segments, "
            f"large on {model.runtime}, {THREADS} threads")
    return [Row(NAME, "VAD time / inference time (long mix)", 100 * vad / seg_s, "%", None, "target <= 5 %",
                notes=note),
            Row(NAME, "inference on VAD segments (long mix)", seg_s, "s", fixed_s, "fixed windows",
                notes=note)]


def _drain(ctx: Context, work: Path, model_dir: Path) -> list[Row]:
    from audio_factory import make_turns

    n = 12 if ctx.quick else 24
    rates, detail = {}, ctx.detail(NAME)
    with service(work, model_dir, EMOTIONQ_BATCH_SIZE="8") as svc:
        for mode in ("fixed", "vad"):
            clips = []
            for k in range(n):  # distinct bytes per mode, so dedup never answers
                clip = work / f"clips-{mode}" / f"clip-{k:03d}.wav"
                clip.parent.mkdir(parents=True, exist_ok=True)
                gap = GAPS_S[(k + (mode == "vad")) % len(GAPS_S)]
                make_turns(clip, [0.3 + 0.01 * k, TEXTS[k % len(TEXTS)], gap] +
                           ([TEXTS[(k + 1) % len(TEXTS)], 0.4] if k % 2 else []))
                clips.append(clip)
            ids = submit_all(svc, clips, threads=4, segmentation=mode)
            svc.start_worker(wait=False)
            jobs = finish_all(svc, ids)
            svc.stop("worker")
            span = max(ts(j["finished_at"]) for j in jobs) - min(ts(j["started_at"]) for j in jobs)
            rates[mode] = n / span
            detail[f"drain {mode}"] = {
                "clips": n, "audio_s": sum(j["output"]["duration_s"] for j in jobs), "drain_s": span,
                "clips_per_s": rates[mode],
                "scored_s": sum(j["output"].get("speech_s", j["output"]["duration_s"]) for j in jobs),
                "mean_batch": sum(j["output"]["timing"]["batch_size"] for j in jobs) / n}
    return [Row(NAME, "drain clips/s, VAD segments, batch 8", rates["vad"], "clips/s", rates["fixed"],
                "fixed windows", notes=f"{n} clips of 1-2 turns with silence, large, {THREADS} threads")]


def _timed(fn) -> tuple[float, object]:
    began = time.perf_counter()
    out = fn()
    return time.perf_counter() - began, out
