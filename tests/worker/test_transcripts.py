"""transcript=true in the worker's scoring: both models on one decode of the audio, the same speech segments;
each segment gains SenseVoice's text, language, events and emotion tag, each channel its transcript."""

from __future__ import annotations

import pytest

import harness
from emotionq import jobs
from emotionq.blobs.local import LocalBlobs
from emotionq.inference import decode
from emotionq.inference.audio import SAMPLE_RATE
from emotionq.inference.sensevoice import TAG
from emotionq.inference.sensevoice_tokens import EMOTION_IDS
from emotionq.jobs.models import extra_models_key
from emotionq.store import open_store
from emotionq.web.form import JobForm
from emotionq.worker import scoring
from emotionq.worker.runtime import ModelHolder


@pytest.fixture(scope="module")
def holder(tiny_model_dir, sensevoice_dir, runtime_cache_dir):
    """One worker's models, as its settings name them: the emotion model and SenseVoice."""
    holder = ModelHolder(harness.settings(model=str(tiny_model_dir), sensevoice_model=str(sensevoice_dir),
                                          torch_threads=1, runtime="torch", runtime_cache_dir=runtime_cache_dir))
    yield holder
    holder.close()


def _score(tmp_path, models, path, form: dict) -> dict:
    store, blobs = open_store(f"sqlite:///{tmp_path / 's.sqlite3'}"), LocalBlobs(tmp_path / "blobs")
    settings = harness.settings(batch_size=1)
    writer = blobs.writer(max_bytes=10**8)
    writer.write(path.read_bytes())
    writer.close()
    sub = jobs.submit(store, settings=settings, client="c", priority="low", options=JobForm.parse(form).options(),
                      input={"filename": path.name, "content_type": None, "bytes": 1, "duration_s": 1.0,
                             "sha256": writer.sha256}, metadata={}, model="m")
    writer.commit(sub.run.blob)
    scoring.score_runs(store=store, blobs=blobs, models=models, settings=settings, hard_limit_s=60,
                       members=[scoring.Member(sub.run.id, "task-1")], worker="w")
    return store.get(f"run:{sub.run.id}")


def test_one_worker_scores_both_models_on_the_same_segments(tmp_path, holder, two_speakers):
    path, _ = two_speakers
    assert set(holder.models) == {"emotion2vec", "sensevoice"}
    run = _score(tmp_path, holder.models, path, {"transcript": "true", "language": "en", "itn": "true"})
    assert run["state"] == "succeeded", run.get("error")
    out = run["output"]
    assert len(out["segments"]) == 2  # the two turns, found by the VAD once for both models
    for segment in out["segments"]:
        assert {"text", "language", "events", "emotion_tag", "label", "scores"} <= set(segment)
        assert set(segment["emotion_tag"]["scores"]) == set(EMOTION_IDS)
        assert segment["emotion_tag"]["label"] == max(segment["emotion_tag"]["scores"],
                                                      key=segment["emotion_tag"]["scores"].get)
        assert all(set(e) == {"tag", "probability"} for e in segment["events"])
    [channel] = out["channels"]
    assert channel["transcript"] == " ".join(s["text"] for s in out["segments"] if s["text"])
    assert out["models"]["sensevoice"]["untrained"] is True and out["model"]["untrained"] is True
    assert out["timing"]["sensevoice_ms"] > 0

    # Fidelity: each segment's text is what funasr's own generate makes of that segment's audio.
    samples, automodel = decode(path), holder.models["sensevoice"]._automodel
    for segment in out["segments"]:
        audio = samples[round(segment["start"] * SAMPLE_RATE):round(segment["end"] * SAMPLE_RATE)]
        [theirs] = automodel.generate(input=audio, language="en", use_itn=True, disable_pbar=True)
        assert segment["text"] == " ".join(TAG.sub(" ", theirs["text"]).split())

    # Without transcript the result is the emotion model's alone.
    plain = _score(tmp_path / "plain", holder.models, path, {})["output"]
    assert "text" not in plain["segments"][0] and "models" not in plain and "transcript" not in plain["channels"][0]
    assert [s["scores"] for s in plain["segments"]] == [s["scores"] for s in out["segments"]]


def test_with_speakers_each_speaker_has_a_transcript(tmp_path, holder, two_speakers):
    run = _score(tmp_path, holder.models, two_speakers[0], {"transcript": "true", "speakers": "2"})
    assert run["state"] == "succeeded", run.get("error")
    out = run["output"]
    assert len(out["speakers"]) == 2
    for speaker in out["speakers"]:
        said = [s["text"] for s in out["segments"] if s["speaker"] == speaker["name"] and s["text"]]
        assert speaker["transcript"] == " ".join(said)


def test_fixed_windows_of_the_mix_gain_a_transcript_too(tmp_path, holder, two_speakers):
    run = _score(tmp_path, holder.models, two_speakers[0], {"transcript": "true", "segmentation": "fixed"})
    assert run["state"] == "succeeded", run.get("error")
    assert [set(s) >= {"text", "language"} for s in run["output"]["segments"]] == [True]
    assert "transcript" in run["output"]["channels"][0]


def test_a_worker_without_sensevoice_fails_such_a_run_with_a_code(tmp_path, holder, two_speakers):
    """Routing keeps these runs away from it (tests/system/test_transcripts.py); should one arrive, it fails
    with a code instead of a result without its transcript."""
    run = _score(tmp_path, {"emotion2vec": holder.model}, two_speakers[0], {"transcript": "true"})
    assert run["state"] == "failed" and run["error"]["code"] == "model_unavailable"


def test_transcript_options_are_part_of_the_dedup_key():
    keys = {jobs.dedup_key(sha256="a" * 64, model="m", options=JobForm.parse(form).options()) for form in (
        {}, {"transcript": "true"}, {"transcript": "true", "language": "en"}, {"transcript": "true", "itn": "true"})}
    assert len(keys) == 4
    transcript = JobForm.parse({"transcript": "true"}).options()
    assert extra_models_key(harness.settings(), {}) == ""  # emotion alone: the key is as before
    assert len({extra_models_key(harness.settings(sensevoice_model=m), transcript) for m in ("a", "b")}) == 2
