"""Speakers: what diarization costs next to the model, and how well it finds the speakers.

The long conversation: four espeak-ng voices taking turns (with and without pauses; 5 minutes, 1 with
--quick), scored in-process by the large checkpoint on the worker's CPU runtime, as the segments
benchmark scores its long mix. Diarization time (the speaker encoder over 1.5 s windows, clustering, the
cuts placed anew) as a share of the model's time on the segments it cut (target <= 10 %), the count
``auto`` found against the truth, and the diarization error rate (0.25 s collar).
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.common import ONNX_CACHE, THREADS, Context, Row, checkpoint

NAME = "speakers"
GAPS_S = (0.0, 0.6, 0.0, 1.2, 0.4, 0.0, 2.5, 0.8)


def run(ctx: Context) -> list[Row]:
    return _diarize_share(ctx, ctx.workdir(NAME), checkpoint("large"))


def _diarize_share(ctx: Context, work: Path, model_dir: Path, *, runtime: str = "auto") -> list[Row]:
    import conversations as cv  # tests/ is on the path once benchmarks.common is imported

    from emotionq.inference import EmotionModel, decode
    from emotionq.inference.segmented import model_options, tracks

    seconds = 60.0 if ctx.quick else 300.0
    lines, spoken = [], 0.0
    while spoken < seconds:
        k = len(lines)
        lines.append((cv.VOICES[(k * 3 + k // 4) % 4], GAPS_S[k % len(GAPS_S)] if k else 0))
        spoken += 3.6 + lines[-1][1]
    path = work / "long-conversation.wav"
    truth = cv.in_turns(path, lines)
    samples = decode(path)
    model = EmotionModel.load(str(model_dir), threads=THREADS, runtime=runtime, runtime_cache_dir=ONNX_CACHE)
    options = {"segmentation": "vad", "channels": "mix", "speakers": "auto", "max_speakers": 10}
    tracks([samples[: 16000 * 3]], options, window_s=30)  # the encoder, loaded once per worker
    plans = [tracks([samples], options, window_s=30) for _ in range(3)]
    plan = min(plans, key=lambda p: p.diarize_s)
    [track] = plan.tracks
    began = time.perf_counter()
    model.predict_batch([samples], options=[model_options(options, track, plan)], max_batch_windows=16)
    model_s = time.perf_counter() - began
    found = len(set(track.speakers))
    error = cv.der(truth, [(s, a / 16000, b / 16000) for (a, b), s in zip(track.bounds, track.speakers)])
    ctx.detail(NAME)["long conversation"] = {
        "audio_s": samples.size / 16000, "speech_s": plan.audio_s(), "segments": len(track.bounds),
        "speakers_true": 4, "speakers_found": found, "der": error, "vad_s": plan.vad_s,
        "diarize_s": plan.diarize_s, "inference_s": model_s, "runtime": model.runtime}
    model.close()
    note = (f"{samples.size / 16000:.0f} s, 4 voices in {len(truth)} turns, {len(track.bounds)} segments, large on "
            f"{model.runtime}, {THREADS} threads")
    return [Row(NAME, "diarization time / inference time (long conversation)", 100 * plan.diarize_s / model_s, "%",
                None, "target <= 10 %", notes=note),
            Row(NAME, "speakers found by auto (long conversation)", found, "speakers", None, "truth 4",
                notes=f"DER {100 * error:.1f} % (0.25 s collar)")]
