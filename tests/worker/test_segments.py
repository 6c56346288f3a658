"""Runs scored by speech segments, end to end in the worker's scoring: a real store and blob store, the tiny
model, real speech joined with known silences by sox."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import harness
from audio_factory import make_channels, make_turns
from emotionq import jobs
from emotionq.blobs.local import LocalBlobs
from emotionq.inference import decode
from emotionq.inference.audio import decode_channels
from emotionq.inference.labels import LABELS
from emotionq.inference.windows import window_bounds
from emotionq.store import open_store
from emotionq.web.form import JobForm
from emotionq.worker import scoring

TOLERANCE_S = 0.25


@pytest.fixture(scope="module")
def model(tiny_model_dir, runtime_cache_dir):
    from emotionq.inference import EmotionModel

    # onnx, not auto: auto's pick follows the machine's load, and torch's batched passes round differently
    # (about 1e-8) from one window at a time, which the exact comparison of fixed windows below would catch
    return EmotionModel.load(str(tiny_model_dir), device="cpu", threads=1, runtime="onnx",
                             runtime_cache_dir=runtime_cache_dir)


@pytest.fixture(scope="module")
def turns(tmp_path_factory):
    path = tmp_path_factory.mktemp("turns") / "turns.wav"
    known = make_turns(path, [1.0, "I can't believe you did that again.", 1.5,
                              "Please tell me what happened this morning.", 1.0])
    return path, known


@pytest.fixture()
def world(tmp_path):
    return open_store(f"sqlite:///{tmp_path / 's.sqlite3'}"), LocalBlobs(tmp_path / "blobs")


def _score(world, model, path, form: dict, **settings) -> dict:
    """Submit ``path`` with the upload form's fields ``form`` and score it; the run as recorded."""
    store, blobs = world
    settings = harness.settings(batch_size=1, **settings)
    writer = blobs.writer(max_bytes=10**8)
    writer.write(path.read_bytes())
    writer.close()
    sub = jobs.submit(store, settings=settings, client="c", priority="low", options=JobForm.parse(form).options(),
                      input={"filename": path.name, "content_type": None, "bytes": 1, "duration_s": 1.0,
                             "sha256": writer.sha256}, metadata={}, model="m")
    writer.commit(sub.run.blob)
    outcome = scoring.score_runs(store=store, blobs=blobs, models={"emotion2vec": model}, settings=settings, hard_limit_s=60,
                                 members=[scoring.Member(sub.run.id, "task-1")], worker="w")
    run = store.get(f"run:{sub.run.id}")
    assert outcome == [run["state"]], run.get("error")
    return run


def test_vad_scores_each_speech_segment_and_weights_the_utterance_by_speech(world, model, turns):
    path, known = turns
    out = _score(world, model, path, {})["output"]
    assert out["segmentation"] == "vad" and out["no_speech"] is False
    segments = out["segments"]
    assert [s["channel"] for s in segments] == ["mix"] * len(known)
    for s, (start, end) in zip(segments, known, strict=True):
        assert abs(s["start"] - start) <= TOLERANCE_S and abs(s["end"] - end) <= TOLERANCE_S, (segments, known)
        assert set(s["scores"]) == set(LABELS) and s["label"] == max(s["scores"], key=s["scores"].get)
        assert s["score"] == s["scores"][s["label"]]
    weights = np.array([s["end"] - s["start"] for s in segments])
    mean = weights @ np.array([[s["scores"][k] for k in LABELS] for s in segments]) / weights.sum()
    assert [out["scores"][k] for k in LABELS] == pytest.approx(mean.tolist(), abs=1e-9)
    assert out["top_label"] == LABELS[int(np.argmax(mean))]
    assert out["speech_s"] == pytest.approx(weights.sum(), abs=1e-3)
    assert out["channels"][0]["name"] == "mix" and out["channels"][0]["scores"] == out["scores"]
    assert "vad_ms" in out["timing"]


def test_each_segment_is_scored_as_the_model_scores_that_audio_alone(world, model, turns):
    path, _ = turns
    out = _score(world, model, path, {})["output"]
    samples = decode(path)
    for s in out["segments"]:
        alone = model.predict(samples[round(s["start"] * 16000) : round(s["end"] * 16000)])
        assert [s["scores"][k] for k in LABELS] == pytest.approx([alone["scores"][k] for k in LABELS], abs=1e-5)


def test_fixed_gives_exactly_the_result_of_fixed_windows(world, model, tmp_path):
    """segmentation=fixed is today's scoring: the windows of the whole recording, silence included, the output
    the model gives (what the service returned before segments), no segment fields."""
    path = tmp_path / "long.wav"
    make_turns(path, [2.0, "I can't believe you did that again.", 3.0, "Thank you.", 1.0] * 2)
    samples = decode(path)
    out = _score(world, model, path, {"segmentation": "fixed"}, window_seconds=5)["output"]
    today = model.predict(samples, window_s=5)
    out.pop("timing")
    assert out == today
    assert [(w["start"], w["end"]) for w in out["timeline"]] == [(a / 16000, b / 16000)
                                                                 for a, b in window_bounds(samples.size, 5)]
    assert "segments" not in out


def test_a_recording_without_speech_succeeds_with_no_segments(world, model, tmp_path):
    path = tmp_path / "silence.wav"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(path), "synth", "3", "pinknoise", "vol",
                    "0.005"], check=True)
    run = _score(world, model, path, {})
    out = run["output"]
    assert run["state"] == "succeeded"
    assert out["no_speech"] is True and out["segments"] == [] and out["timeline"] == []
    assert out["scores"] is None and out["top_label"] is None
    assert out["channels"] == [{"name": "mix", "scores": None, "top_label": None, "no_speech": True,
                                "summary": {"speech_s": 0, "share": {}, "dominant_label": None, "strongest": {},
                                            "changes": []}}]
    assert out["duration_s"] == pytest.approx(3.0)


def test_long_speech_is_scored_in_pieces_of_at_most_the_window(world, model, tmp_path):
    path = tmp_path / "talk.wav"
    make_turns(path, ["I can't believe you did that again.", 0.3, "Please tell me what happened this morning.",
                      0.3, "Thank you very much."])
    out = _score(world, model, path, {}, window_seconds=2)["output"]
    assert len(out["segments"]) >= 3
    assert all(s["end"] - s["start"] <= 2.0 + 1e-9 for s in out["segments"])


def test_the_segment_options_are_part_of_the_dedup_key():
    keys = {jobs.dedup_key(sha256="a", model="m", options=JobForm.parse(form).options())
            for form in ({}, {"segmentation": "fixed"}, {"min_silence_ms": "300"}, {"channels": "separate"},
                         {"channels": "separate", "channel_names": "agent,customer"}, {"vad_threshold": "0.6"})}
    assert len(keys) == 6


# -- channels=separate -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def call(tmp_path_factory):
    """A two-channel call made by sox: the agent speaks first on the left, the customer after on the right."""
    tmp = tmp_path_factory.mktemp("call")
    agent = make_turns(tmp / "agent.wav", [0.5, "Hello, this is the agent speaking.", 4.0,
                                           "Thank you for calling.", 1.0])
    customer = make_turns(tmp / "customer.wav", [3.2, "I am very angry about my bill.", 4.5])
    return make_channels(tmp / "call.wav", [tmp / "agent.wav", tmp / "customer.wav"]), agent, customer


def test_separate_channels_are_segmented_and_scored_each_on_its_own(world, model, call):
    path, agent, customer = call
    out = _score(world, model, path, {"channels": "separate", "channel_names": "agent,customer"})["output"]
    assert [c["name"] for c in out["channels"]] == ["agent", "customer"]
    for name, known in (("agent", agent), ("customer", customer)):
        mine = [s for s in out["segments"] if s["channel"] == name]
        assert len(mine) == len(known), (name, out["segments"])
        for s, (start, end) in zip(mine, known):
            assert abs(s["start"] - start) <= TOLERANCE_S and abs(s["end"] - end) <= TOLERANCE_S, (name, s, known)
    assert [s["start"] for s in out["segments"]] == sorted(s["start"] for s in out["segments"])
    samples = decode_channels(path)
    customer_segment = next(s for s in out["segments"] if s["channel"] == "customer")
    alone = model.predict(samples[1][round(customer_segment["start"] * 16000):round(customer_segment["end"] * 16000)])
    assert customer_segment["scores"] == pytest.approx(alone["scores"], abs=1e-5)  # the right channel's audio
    assert out["channels"][0]["summary"]["speech_s"] == pytest.approx(
        sum(s["end"] - s["start"] for s in out["segments"] if s["channel"] == "agent"), abs=1e-3)


def test_default_channel_names_and_a_channel_of_silence(world, model, tmp_path):
    left = tmp_path / "left.wav"
    make_turns(left, [0.5, "Hello, this is the agent speaking.", 1.0])
    right = tmp_path / "right.wav"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(right), "trim", "0", "2"], check=True)
    path = make_channels(tmp_path / "half.wav", [left, right])
    out = _score(world, model, path, {"channels": "separate"})["output"]
    ch1, ch2 = out["channels"]
    assert (ch1["name"], ch1["no_speech"], ch2["name"], ch2["no_speech"]) == ("ch1", False, "ch2", True)
    assert ch2["scores"] is None and out["no_speech"] is False
    assert {s["channel"] for s in out["segments"]} == {"ch1"}
    assert out["scores"] == ch1["scores"]


def test_fixed_windows_per_channel(world, model, call):
    path, _, _ = call
    out = _score(world, model, path, {"channels": "separate", "segmentation": "fixed"})["output"]
    samples = decode_channels(path)
    for name, channel in zip(("ch1", "ch2"), samples):
        mine = [s for s in out["segments"] if s["channel"] == name]
        assert [(s["start"], s["end"]) for s in mine] == [(0.0, channel.size / 16000)]


@pytest.mark.parametrize("channels, form, code", [
    (32, {"channels": "separate"}, "too_many_channels"),
    (2, {"channels": "separate", "channel_names": "a,b,c"}, "channel_names_mismatch"),
])
def test_bad_channel_requests_fail_with_a_code(world, model, tmp_path, channels, form, code):
    """Past the upload's own checks (a header may misstate its channels), the worker fails the job with a code."""
    path = tmp_path / "many.wav"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", str(channels), "-b", "16", str(path), "synth", "1", "sine",
                    "300"], check=True)
    run = _score(world, model, path, form)
    assert run["state"] == "failed" and run["error"]["code"] == code and run["error"]["retryable"] is False


def test_a_mixed_recording_keeps_its_stereo_average(world, model, call):
    path, _, _ = call
    out = _score(world, model, path, {})["output"]
    assert [c["name"] for c in out["channels"]] == ["mix"]
    assert len(out["segments"]) >= 2


def test_embedding_and_frames_with_segments(world, model, turns):
    path, _ = turns
    out = _score(world, model, path, {"granularity": "frame", "embedding": "true"})["output"]
    assert len(out["embedding"]) == model.embed_dim
    [channel] = out["channels"]
    frames = sum(int((s["end"] - s["start"]) * 16000) // 320 for s in out["segments"])
    assert abs(len(channel["frames"]) - frames) <= len(out["segments"]) and len(channel["frames"][0]) == model.embed_dim
