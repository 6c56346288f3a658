"""Speech segments on real speech: espeak-ng utterances joined with known silences by sox."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from audio_factory import make_turns
from emotionq.inference import decode
from emotionq.inference.audio import SAMPLE_RATE
from emotionq.inference.segments import VadOptions, detector, spans, split

TOLERANCE_S = 0.25
TURNS = ["I can't believe you did that again.", 1.5, "Please tell me what happened this morning.", 2.0,
         "Thank you.", 1.2]


@pytest.fixture(scope="module")
def turns(tmp_path_factory):
    path = tmp_path_factory.mktemp("turns") / "turns.wav"
    known = make_turns(path, [0.8, *TURNS])
    return decode(path), known


def _seconds(bounds):
    return [(a / SAMPLE_RATE, b / SAMPLE_RATE) for a, b in bounds]


def test_segments_match_the_known_speech_within_a_quarter_second(turns):
    samples, known = turns
    found = _seconds(detector().speech(samples))
    assert len(found) == len(known), (found, known)
    for (start, end), (k_start, k_end) in zip(found, known):
        assert abs(start - k_start) <= TOLERANCE_S and abs(end - k_end) <= TOLERANCE_S, (found, known)


def test_no_segment_lies_in_pure_silence(turns):
    samples, known = turns
    silences = [(0.0, known[0][0])] + [(a[1], b[0]) for a, b in zip(known, known[1:])]
    silences.append((known[-1][1], samples.size / SAMPLE_RATE))
    for start, end in _seconds(detector().speech(samples)):
        for quiet_start, quiet_end in silences:
            inside = min(end, quiet_end - TOLERANCE_S) - max(start, quiet_start + TOLERANCE_S)
            assert inside <= 0, f"segment {start:.2f}-{end:.2f} reaches into the silence {quiet_start:.2f}-{quiet_end:.2f}"


def test_silence_and_quiet_noise_have_no_speech(tmp_path):
    silence = tmp_path / "silence.wav"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(silence), "trim", "0", "4"], check=True)
    noise = tmp_path / "noise.wav"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(noise), "synth", "4", "pinknoise",
                    "vol", "0.01"], check=True)
    assert detector().speech(decode(silence)) == []
    assert detector().speech(decode(noise)) == []


def test_thresholds_change_what_counts_as_one_segment(turns):
    samples, known = turns
    # a pause longer than every silence in the file: the utterances merge into one padded span
    merged = detector().speech(samples, VadOptions(min_silence_ms=2500))
    assert len(merged) == 1
    # a minimum speech length longer than "Thank you." drops it
    assert len(detector().speech(samples, VadOptions(min_speech_ms=int((known[2][1] - known[2][0]) * 1000) + 300))) \
        == len(known) - 1
    # padding moves each boundary out by the pad (start clipped at 0)
    plain, padded = detector().speech(samples, VadOptions(speech_pad_ms=0)), detector().speech(
        samples, VadOptions(speech_pad_ms=200))
    assert [a - b for (a, _), (b, _) in zip(plain, padded)] == [int(0.2 * SAMPLE_RATE)] * len(plain)


def test_spans_follow_the_probabilities():
    frame = 512
    probs = np.array([0.0] * 10 + [0.9] * 20 + [0.0] * 5 + [0.9] * 20 + [0.0] * 40, np.float32)
    options = VadOptions(min_silence_ms=int(4 * frame / 16), speech_pad_ms=0)  # 4 quiet frames end speech
    assert spans(probs, probs.size * frame, options) == [(10 * frame, 30 * frame), (35 * frame, 55 * frame)]
    joined = VadOptions(min_silence_ms=int(5 * frame / 16), speech_pad_ms=0)
    assert spans(probs, probs.size * frame, joined) == [(10 * frame, 55 * frame)]


def test_long_speech_is_cut_in_its_pauses_into_pieces_of_at_most_the_window(tmp_path):
    path = tmp_path / "long.wav"
    known = make_turns(path, ["I can't believe you did that again.", 0.4, "Please tell me what happened.", 0.4,
                              "Thank you very much for coming.", 0.4, "I can't believe you did that again."])
    samples = decode(path)
    pieces = split(samples, [(0, samples.size)], 3.0)
    assert len(pieces) >= 3
    assert all(b - a <= 3.0 * SAMPLE_RATE for a, b in pieces)
    assert pieces[0][0] == 0 and pieces[-1][1] == samples.size
    assert all(p[1] == q[0] for p, q in zip(pieces, pieces[1:]))
    gaps = [(a[1], b[0]) for a, b in zip(known, known[1:])]
    for _, cut in pieces[:-1]:  # every utterance is shorter than the window: every cut falls in a pause
        assert any(g0 - 0.05 <= cut / SAMPLE_RATE <= g1 + 0.05 for g0, g1 in gaps), (cut / SAMPLE_RATE, gaps)


def test_short_spans_are_not_cut():
    samples = np.zeros(10 * SAMPLE_RATE, np.float32)
    assert split(samples, [(0, 3 * SAMPLE_RATE), (5 * SAMPLE_RATE, 9 * SAMPLE_RATE)], 5.0) == [
        (0, 3 * SAMPLE_RATE), (5 * SAMPLE_RATE, 9 * SAMPLE_RATE)]
