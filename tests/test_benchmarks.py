"""The GPU benchmark's measuring code, run on the CPU: it only runs on a GPU in `make bench`, so a bug
in it would otherwise first show on a machine that has one."""

from __future__ import annotations


def test_gpu_benchmark_measures_autocast_and_the_batch_sweep_on_any_model(tiny_model_dir, speech_wav):
    from benchmarks.gpu import BATCH_WINDOWS, measure
    from emotionq.inference import EmotionModel
    from emotionq.inference.audio import decode

    model = EmotionModel.load(str(tiny_model_dir), device="cpu", threads=1)
    clips = [decode(speech_wav), decode(speech_wav)[:16000]]
    detail: dict = {}
    rows = measure(model, clips, detail)
    assert len(rows) == 1 + len(BATCH_WINDOWS)
    assert all(r.value and r.value > 0 and r.ratio for r in rows), rows
    assert detail["max_score_diff"] == 0.0  # no autocast on the CPU: both runs are fp32
    assert all(detail[f"batch_{w}"]["max_score_diff_vs_predict"] < 1e-5 for w in BATCH_WINDOWS)
