"""The diarizer on synthetic conversations with known truth (espeak-ng voices the encoder tells apart):
the diarization error rate with a 0.25 s collar, the speaker count found, and speech too short to embed."""

from __future__ import annotations

import conversations as cv
import numpy as np
import pytest

from emotionq.inference import decode, segmented, speakers
from emotionq.inference.segments import detector, split

MAX_DER = 0.10


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """As in a worker (EMOTIONQ_TORCH_THREADS): torch's threads do not fight the other tests' processes."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conversations")
    out = {}
    for n, lines in ((2, cv.TWO), (3, cv.THREE), (4, cv.FOUR)):
        truth = cv.in_turns(tmp / f"{n}.wav", lines)
        samples = decode(tmp / f"{n}.wav")
        out[n] = truth, samples, split(samples, detector().speech(samples), 30.0)
    return out


def _hypothesis(turns: speakers.Turns) -> list[tuple[str, float, float]]:
    return [(f"S{k + 1}", a / 16000, b / 16000) for (a, b), k in zip(turns.bounds, turns.speakers)]


@pytest.mark.parametrize("count", [2, 3, 4])
def test_auto_finds_the_true_count_and_who_spoke_when(recordings, count):
    truth, samples, segments = recordings[count]
    turns = speakers.diarize(samples, segments, speakers="auto")
    assert max(turns.speakers) + 1 == count
    assert cv.der(truth, _hypothesis(turns)) <= MAX_DER
    assert turns.speakers[0] == 0 and sorted(set(turns.speakers)) == list(range(count))  # in order of speech
    changes = sum(a.voice != b.voice for a, b in zip(truth, truth[1:]))
    assert sum(a != b for a, b in zip(turns.speakers, turns.speakers[1:])) == changes


def test_turn_changes_without_a_pause_split_a_speech_segment(recordings):
    truth, samples, segments = recordings[3]
    back_to_back = [b.start for a, b in zip(truth, truth[1:]) if b.start - a.end < 0.05]
    assert back_to_back and len(segments) < len(truth)  # the detector alone joins them
    turns = speakers.diarize(samples, segments, speakers="auto")
    cuts = [a / 16000 for (a, _), p, q in zip(turns.bounds[1:], turns.speakers, turns.speakers[1:]) if p != q]
    for at in back_to_back:
        assert min(abs(c - at) for c in cuts) <= 0.5, (cuts, back_to_back)


def test_a_known_count_and_a_cap(recordings):
    truth, samples, segments = recordings[4]
    assert cv.der(truth, _hypothesis(speakers.diarize(samples, segments, speakers=4))) <= MAX_DER
    assert max(speakers.diarize(samples, segments, speakers="auto", max_speakers=2).speakers) + 1 == 2
    one = speakers.diarize(samples, segments, speakers=1)
    assert one.bounds == segments and set(one.speakers) == {0}


def test_speech_too_short_to_embed_is_one_speaker(tmp_path):
    truth = cv.in_turns(tmp_path / "yes.wav", [(cv.VOICES[0], 0)], first_s=0.3)
    samples = decode(tmp_path / "yes.wav")[: int((truth[0].start + 0.6) * 16000)]
    segments = detector().speech(samples)
    turns = speakers.diarize(samples, segments, speakers="auto")
    assert turns.bounds == segments and set(turns.speakers) == {0}
    assert speakers.diarize(samples, [], speakers="auto") == speakers.Turns([], [])


def test_separate_channels_are_diarized_each_and_named_in_order_of_first_speech(tmp_path):
    call = cv.call(tmp_path / "call.wav", room=True)
    from emotionq.inference.audio import decode_channels

    plan = segmented.tracks(decode_channels(tmp_path / "call.wav"), {
        "segmentation": "vad", "channels": "separate", "speakers": "auto", "max_speakers": 10}, window_s=30.0)
    assert plan.diarized and plan.diarize_s > 0
    said = sorted((a / 16000, name, t.name) for t in plan.tracks for (a, _), name in zip(t.bounds, t.speakers))
    assert list(dict.fromkeys(name for _, name, _ in said)) == ["S1", "S2", "S3"]
    voice_of = {}
    for start, name, channel in said:  # each found speaker is one voice of the truth, on one channel
        near = min(call.truth, key=lambda t: abs(t.start - start))
        assert voice_of.setdefault(name, (near.voice, near.channel)) == (near.voice, near.channel)
    off = segmented.tracks(decode_channels(tmp_path / "call.wav"), {"segmentation": "vad", "channels": "separate"},
                           window_s=30.0)
    assert [set(t.speakers) for t in off.tracks] == [{"ch1"}, {"ch2"}] and not off.diarized
    assert np.isclose(off.diarize_s, 0)
