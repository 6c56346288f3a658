"""Runs with speakers, through the worker's scoring (a real store and blob store, the tiny model): segments
re-cut and named per speaker, the speakers list, and the conversation measured against synthetic recordings
whose speakers, overlaps, interruption and silence are known."""

from __future__ import annotations

import conversations as cv
import pytest

import harness
from emotionq import jobs
from emotionq.blobs.local import LocalBlobs
from emotionq.store import open_store
from emotionq.web.form import JobForm
from emotionq.worker import scoring

TOLERANCE_S = 0.25


@pytest.fixture(scope="module")
def model(tiny_model_dir, runtime_cache_dir):
    from emotionq.inference import EmotionModel

    return EmotionModel.load(str(tiny_model_dir), device="cpu", threads=1, runtime_cache_dir=runtime_cache_dir)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("world")
    return open_store(f"sqlite:///{tmp / 's.sqlite3'}"), LocalBlobs(tmp / "blobs")


@pytest.fixture(scope="module")
def room_call(tmp_path_factory):
    path = tmp_path_factory.mktemp("call") / "call.wav"
    return path, cv.call(path, room=True)


def _score(world, model, path, form: dict) -> dict:
    store, blobs = world
    settings = harness.settings(batch_size=1)
    writer = blobs.writer(max_bytes=10**8)
    writer.write(path.read_bytes())
    writer.close()
    sub = jobs.submit(store, settings=settings, client="c", priority="low", options=JobForm.parse(form).options(),
                      input={"filename": path.name, "content_type": None, "bytes": 1, "duration_s": 1.0,
                             "sha256": writer.sha256}, metadata={}, model="m")
    writer.commit(sub.run.blob)
    outcome = scoring.score_runs(store=store, blobs=blobs, models={"emotion2vec": model}, settings=settings,
                                 hard_limit_s=60,
                                 members=[scoring.Member(sub.run.id, "task-1")], worker="w")
    run = store.get(f"run:{sub.run.id}")
    assert outcome == ["succeeded"], run.get("error")
    return run["output"]


def test_one_channel_of_four_voices_is_cut_and_named_per_speaker(world, model, tmp_path):
    truth = cv.in_turns(tmp_path / "four.wav", cv.FOUR)
    out = _score(world, model, tmp_path / "four.wav", {"speakers": "auto"})
    segments = out["segments"]
    assert [s["name"] for s in out["speakers"]] == ["S1", "S2", "S3", "S4"]
    assert cv.der(truth, [(s["speaker"], s["start"], s["end"]) for s in segments]) <= 0.10
    assert out["timing"]["diarize_ms"] > 0
    for entry in out["speakers"]:
        mine = [s for s in segments if s["speaker"] == entry["name"]]
        assert entry["speech_s"] == pytest.approx(sum(s["end"] - s["start"] for s in mine), abs=1e-3)
        assert entry["summary"]["speech_s"] == entry["speech_s"] and entry["channels"] == ["mix"]
        assert set(entry["scores"]) == set(out["scores"]) and entry["top_label"] in entry["scores"]
    assert sum(s["share"] for s in out["speakers"]) == pytest.approx(1, abs=1e-3)
    conversation = out["conversation"]
    assert conversation["parties_are"] == "speakers"
    assert [p["turns"] for p in conversation["parties"]] == [2, 2, 2, 2]
    assert conversation["overlap"]["count"] == 0 and conversation["interruptions"]["count"] == 0  # one channel


def test_a_two_channel_call_counts_every_overlap_and_interruption_and_invents_none(world, model, room_call):
    path, call = room_call
    out = _score(world, model, path, {"channels": "separate", "channel_names": "agent,customer"})
    conversation = out["conversation"]
    assert conversation["parties_are"] == "channels"
    assert [s["speaker"] for s in out["segments"]] == [s["channel"] for s in out["segments"]]
    found = conversation["overlap"]["events"]
    assert len(found) == len(call.overlaps)
    for event, (start, end) in zip(found, call.overlaps):
        assert abs(event["start"] - start) <= TOLERANCE_S and abs(event["end"] - end) <= TOLERANCE_S
        assert event["parties"] == ["agent", "customer"]
    [(at, by, of)] = call.interruptions
    [event] = conversation["interruptions"]["events"]
    assert abs(event["at"] - at) <= TOLERANCE_S and (event["by"], event["of"]) == ("agent", "customer")
    assert conversation["non_talk"]["count"] == 1
    assert conversation["non_talk"]["longest_s"] == pytest.approx(call.silences[0][1] - call.silences[0][0],
                                                                  abs=2 * TOLERANCE_S)
    agent, customer = conversation["parties"]
    assert (agent["interrupted_others"], customer["was_interrupted"]) == (1, 1)
    assert (agent["turns"], customer["turns"]) == (3, 2)  # "Yes." under the customer takes no turn


def test_a_room_channel_beside_a_customer_is_diarized_within_its_channel(world, model, room_call):
    path, call = room_call
    out = _score(world, model, path, {"channels": "separate", "speakers": "auto"})
    assert [(s["name"], s["channels"]) for s in out["speakers"]] == [("S1", ["ch1"]), ("S2", ["ch2"]),
                                                                    ("S3", ["ch1"])]
    voice = {}
    for s in out["segments"]:  # each speaker is one voice of the truth
        near = min(call.truth, key=lambda t: abs(t.start - s["start"]) if t.channel == int(s["channel"][2:]) - 1
                   else 1e9)
        assert voice.setdefault(s["speaker"], near.voice) == near.voice
    assert out["conversation"]["parties_are"] == "speakers"
    assert out["conversation"]["interruptions"]["events"][0]["by"] == "S1"


def test_no_speech_with_speakers_succeeds_with_no_speakers(world, model, tmp_path):
    import subprocess

    path = tmp_path / "hiss.wav"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(path), "synth", "2", "pinknoise", "vol",
                    "0.005"], check=True)
    out = _score(world, model, path, {"speakers": "auto"})
    assert out["no_speech"] is True and out["speakers"] == [] and out["conversation"] is None
