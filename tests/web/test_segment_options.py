"""The segment and channel options at upload, against a real API process in embedded mode with no worker:
bad combinations are a 422 with a code, never a 5xx."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from audio_factory import distinct_clips, make_channels, make_turns
from emotionq.inference.segments import VadOptions
from emotionq.web.form import VAD, JobForm
from harness import running


@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_model_dir):
    with running(tmp_path_factory.mktemp("api"), model=tiny_model_dir, broker="", store="", worker=False,
                 max_channels=8) as svc:
        yield svc


@pytest.fixture(scope="module")
def stereo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stereo")
    make_turns(tmp / "a.wav", [0.3, "Hello there.", 0.5])
    make_turns(tmp / "b.wav", [1.0, "Good morning.", 0.2])
    return make_channels(tmp / "stereo.wav", [tmp / "a.wav", tmp / "b.wav"])


def _problem(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code and body["detail"], body
    return body


def test_a_32_channel_file_is_refused_for_separate_channels(api, tmp_path):
    path = tmp_path / "many.wav"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "32", "-b", "16", str(path), "synth", "1", "sine", "300"],
                   check=True)
    body = _problem(api.submit(path, channels="separate"), 422, "too_many_channels")
    assert "32 channels" in body["detail"] and "at most 8" in body["detail"]
    assert api.submit(path, segmentation="fixed").status_code == 202  # mixed to mono, as ever


def test_channel_names_must_match_the_channels(api, stereo):
    body = _problem(api.submit(stereo, channels="separate", channel_names="agent,customer,supervisor"), 422,
                    "channel_names_mismatch")
    assert "has 2" in body["detail"]
    r = api.submit(stereo, channels="separate", channel_names="agent,customer")
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["options"]["channel_names"] == ["agent", "customer"] and job["input"]["channels"] == 2


@pytest.mark.parametrize("fields, fragment", [
    ({"segmentation": "words"}, "segmentation"),
    ({"channels": "stereo"}, "channels"),
    ({"channel_names": "agent,customer"}, "channels=separate"),
    ({"channels": "separate", "channel_names": "agent,agent"}, "name of its own"),
    ({"channels": "separate", "channel_names": "<script>,b"}, "letters, digits"),
    ({"vad_threshold": "1.5"}, "vad_threshold"),
    ({"min_silence_ms": "-1"}, "min_silence_ms"),
    ({"speech_pad_ms": "lots"}, "speech_pad_ms"),
    ({"segmentation": "fixed", "min_speech_ms": "100"}, "segmentation=vad only"),
])
def test_bad_segment_options_are_422(api, speech_wav, tmp_path, fields, fragment):
    clip = distinct_clips(speech_wav, tmp_path, 1)[0]
    r = api.submit(clip, **fields)
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]


def test_the_options_travel_with_the_job(api, speech_wav, tmp_path):
    clip = distinct_clips(speech_wav, tmp_path, 1)[0]
    job = api.submit(clip, min_silence_ms="300", vad_threshold="0.6").json()
    assert job["options"] == {"granularity": "utterance", "embedding": False, "segmentation": "vad",
                              "channels": "mix", "vad_threshold": 0.6, "min_speech_ms": 250, "min_silence_ms": 300,
                              "speech_pad_ms": 30}
    assert api.submit(clip, segmentation="fixed").json()["dedup"]["reused"] is False  # another question


def test_the_forms_defaults_are_the_detectors():
    defaults = JobForm.parse({})
    assert (defaults.vad_threshold, defaults.min_speech_ms, defaults.min_silence_ms, defaults.speech_pad_ms) == (
        VadOptions.threshold, VadOptions.min_speech_ms, VadOptions.min_silence_ms, VadOptions.speech_pad_ms)
    assert VAD.threshold == VadOptions().threshold


def test_a_json_body_takes_the_same_options_with_names_as_a_list():
    from emotionq.web.form import parse_json

    url, form = parse_json(b'{"audio_url": "https://example.com/a.wav", "channels": "separate", '
                           b'"channel_names": ["agent", "customer"], "segmentation": "vad", "min_silence_ms": 300}')
    assert form.options()["channel_names"] == ["agent", "customer"] and form.options()["min_silence_ms"] == 300


@pytest.mark.parametrize("fields, code", [
    ({"speakers": "11"}, "speakers_out_of_range"),
    ({"speakers": "0"}, "speakers_out_of_range"),
    ({"speakers": "many"}, "speakers_out_of_range"),
    ({"speakers": "auto", "max_speakers": "1"}, "speakers_out_of_range"),
    ({"speakers": "auto", "max_speakers": "40"}, "speakers_out_of_range"),
    ({"speakers": "auto", "segmentation": "fixed"}, "speakers_need_vad"),
    ({"speakers": "3", "max_speakers": "4"}, "max_speakers_needs_auto"),
    ({"max_speakers": "4"}, "max_speakers_needs_auto"),
])
def test_bad_speaker_options_are_422_with_a_code(api, speech_wav, tmp_path, fields, code):
    clip = distinct_clips(speech_wav, tmp_path, 1)[0]
    _problem(api.submit(clip, **fields), 422, code)


def test_speakers_are_part_of_the_dedup_key_and_absent_when_off(api, speech_wav, tmp_path):
    clip = distinct_clips(speech_wav, tmp_path, 1)[0]
    off = api.submit(clip).json()
    assert "speakers" not in off["options"] or off["options"]["speakers"] is None
    auto = api.submit(clip, speakers="auto", max_speakers="4").json()
    assert (auto["options"]["speakers"], auto["options"]["max_speakers"]) == ("auto", 4)
    assert auto["dedup"]["reused"] is False and auto["dedup"]["run_id"] != off["dedup"]["run_id"]
    two = api.submit(clip, speakers="2").json()
    assert two["options"]["speakers"] == 2 and two["dedup"]["run_id"] not in (off["dedup"]["run_id"],
                                                                              auto["dedup"]["run_id"])
    assert api.submit(clip, speakers="2").json()["dedup"]["run_id"] == two["dedup"]["run_id"]  # coalesced
