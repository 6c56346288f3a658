"""The GPU benchmark's measuring code, run on the CPU: it only runs on a GPU in `make bench` and
scripts/gpu-check, so a bug in it would otherwise first show on a machine that has one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_measures_autocast_and_the_batch_sweep_on_any_model(tiny_model_dir, speech_wav):
    from benchmarks.gpu import BATCH_WINDOWS, measure, precisions
    from emotionq.inference import EmotionModel
    from emotionq.inference.audio import decode

    model = EmotionModel.load(str(tiny_model_dir), device="cpu", threads=1, runtime="torch")  # CUDA runs torch
    clips = [decode(speech_wav), decode(speech_wav)[:16000]]
    detail: dict = {}
    rows = measure(model, clips, detail, sweep_n=8, sweep_s=1.0)
    assert len(rows) == 2 + len(BATCH_WINDOWS)
    assert all(r.value and r.value > 0 and r.ratio for r in rows), rows
    assert detail["max_score_diff"] == 0.0  # no autocast on the CPU: both runs are fp32
    assert detail["predict_batch_defaults"]["max_score_diff_vs_predict"] < 1e-5
    for windows in BATCH_WINDOWS:
        assert detail[f"batch_{windows}"]["max_score_diff_vs_batch_1"] < 1e-5
        assert detail[f"batch_{windows}"]["gpu_peak_mb"] is None  # no CUDA here

    rows = precisions(model, clips, detail)  # bf16 and fp16 vs fp32: no autocast on the CPU, so no difference
    assert [r.metric for r in rows] == ["emotion2vec bfloat16 autocast clips/s", "emotion2vec float16 autocast clips/s"]
    assert all(r.value > 0 and r.ratio for r in rows)
    assert detail["precision_float16"]["max_score_diff"] == 0.0 and detail["precision_float16"]["top_label_kept"] == 2


def test_gpu_benchmark_tries_fixed_shapes_on_any_model(tiny_model_dir):
    from benchmarks.gpu import fixed_shapes
    from emotionq.inference import EmotionModel

    model = EmotionModel.load(str(tiny_model_dir), device="cpu", threads=1, runtime="torch")
    detail: dict = {}
    graph, compiled = fixed_shapes(model, detail, batch=2, seconds=1.0, compile_backend="eager", runs=2)
    assert graph.value is None and "no CUDA" in graph.notes
    assert compiled.value and compiled.ratio, compiled  # torch.compile's eager backend: the code path, not speed
    assert detail["fixed_shapes"]["compiled_max_frame_diff"] < 1e-5


@pytest.mark.slow
def test_gpu_check_runs_standalone_without_servers(tmp_path):
    """scripts/gpu-check's Python part, on the CPU, with no Redis, RabbitMQ or Celery client importable
    (the GPU machine has none of them): it needs only torch, funasr and emotionq.inference."""
    from benchmarks.common import MIXED_LENGTHS_S
    from benchmarks.gpu import CLIP_LENGTHS_S

    assert CLIP_LENGTHS_S == MIXED_LENGTHS_S
    out = tmp_path / "gpu.json"
    code = ("import runpy, sys; sys.modules.update(dict.fromkeys(['redis', 'kombu', 'celery', 'amqp'])); "
            f"sys.argv = ['benchmarks.gpu', '--arch', 'tiny', '--device', 'cpu', '--quick', '--no-sensevoice', "
            f"'--out', {str(out)!r}]; "
            "runpy.run_module('benchmarks.gpu', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert any(r["metric"] == "sweep clips/s, 32 windows per pass" and r["value"] > 0 for r in result["rows"])
    assert result["details"]["fixed_shapes"]["compiled_max_frame_diff"] < 1e-5


def test_segments_benchmark_measures_the_vad_share_on_any_model(tiny_model_dir, tmp_path):
    from benchmarks.common import Context
    from benchmarks.segments import NAME, _vad_share

    ctx = Context(quick=True)
    rows = _vad_share(ctx, tmp_path, tiny_model_dir, runtime="torch")
    assert [r.unit for r in rows] == ["%", "s"] and all(r.value > 0 for r in rows), rows
    mix = ctx.detail(NAME)["long mix"]
    assert 0 < mix["speech_s"] < mix["audio_s"] and mix["segments"] >= 10  # the silences are left out
    assert mix["inference_fixed_s"] > 0


def test_gpu_benchmark_times_the_speaker_encoder_on_any_device():
    from benchmarks.gpu import speaker_encoder

    detail: dict = {}
    [row] = speaker_encoder(detail, device="cpu", seconds=4.0, runs=1)
    assert row.value and row.value > 0 and row.baseline and row.baseline > 0, row
    assert detail["speaker_encoder"]["windows"] == 6 and detail["speaker_encoder"]["max_embedding_diff"] == 0.0


def test_transcripts_benchmark_times_both_models_on_the_same_segments(tiny_model_dir, sensevoice_dir, tmp_path):
    from benchmarks.common import Context
    from benchmarks.gpu import sensevoice
    from benchmarks.transcripts import NAME, speed
    from emotionq.inference import EmotionModel
    from emotionq.inference.audio import decode

    ctx = Context(quick=True)
    [row] = speed(ctx, tmp_path, tiny_model_dir, sensevoice_dir, seconds=8.0, runtime="torch", runs=1)
    assert row.unit == "s/s" and row.value > 0 and row.baseline > 0, row
    assert ctx.detail(NAME)["speed"]["segments"] >= 2
    model = EmotionModel.load(str(tiny_model_dir), device="cpu", threads=1, runtime="torch")
    [gpu_row] = sensevoice(model, sensevoice_dir, [decode(tmp_path / "transcripts-mix.wav")[:32000]], {})
    assert gpu_row.value > 0 and gpu_row.ratio, gpu_row
