"""Synthetic conversations with known truth: espeak-ng voices speak, sox trims, numpy places each utterance.

The voices were chosen by the speaker encoder's own cosine similarity (one voice over two texts scores
0.90-0.93; these score 0.56-0.71 against each other), so the truth is a truth the encoder can see.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16000
VOICES = ("en-us+klatt", "en-us+f3", "en-us+m7", "en-gb-x-rp+f1")  # most distinct first
TEXTS = (
    "I called yesterday about the broken heater and nobody answered me.",
    "Thank you for waiting, let me look at your account right now.",
    "The technician can come on Thursday morning between eight and ten.",
    "That is far too late, the house is freezing and the children are cold.",
    "I understand, I will ask the manager whether we can do better.",
    "Please write down the reference number before we hang up today.",
    "We moved the meeting to the small room on the second floor.",
    "Could you send me the numbers from last quarter by tonight?",
)


@dataclass(frozen=True)
class Utterance:
    """One line of the script: who says what, on which channel, starting when (seconds)."""

    voice: str
    text: str
    start: float
    channel: int = 0


@dataclass(frozen=True)
class Spoken:
    """An utterance as written: its voice, channel and exact span in seconds."""

    voice: str
    channel: int
    start: float
    end: float


def speak(voice: str, text: str) -> np.ndarray:
    """``text`` in ``voice`` at 16 kHz mono float32, espeak-ng's leading and trailing silence trimmed by sox."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, trimmed = Path(tmp) / "raw.wav", Path(tmp) / "trimmed.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True, capture_output=True)
        subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(trimmed), "silence", "1",
                        "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%", "reverse"],
                       check=True, capture_output=True)
        samples, _ = sf.read(trimmed, dtype="float32")
    return samples


def write(path: str | Path, script: list[Utterance], *, channels: int = 1, tail_s: float = 0.5) -> list[Spoken]:
    """Write ``script`` to ``path`` (16-bit WAV, ``channels`` channels) and return its truth, in time order."""
    spoken = [(u, speak(u.voice, u.text)) for u in script]
    length = max(int(u.start * RATE) + s.size for u, s in spoken) + int(tail_s * RATE)
    audio = np.zeros((length, channels), np.float32)
    truth = []
    for u, s in spoken:
        at = int(u.start * RATE)
        audio[at : at + s.size, u.channel] += s
        truth.append(Spoken(u.voice, u.channel, at / RATE, (at + s.size) / RATE))
    sf.write(str(path), np.clip(audio, -1, 1), RATE, subtype="PCM_16")
    return sorted(truth, key=lambda t: t.start)


def in_turns(path: str | Path, lines: list[tuple[str, float]], *, first_s: float = 0.5) -> list[Spoken]:
    """A one-channel conversation: each ``(voice, gap)`` says the next of ``TEXTS`` after ``gap`` seconds of
    silence (0: a turn change without a pause). Written to ``path``; returns the truth."""
    said = [speak(voice, TEXTS[i % len(TEXTS)]) for i, (voice, _) in enumerate(lines)]
    length = int(first_s * RATE) + sum(int(gap * RATE) + s.size for (_, gap), s in zip(lines, said)) + RATE // 2
    audio = np.zeros(length, np.float32)
    truth, at = [], int(first_s * RATE)
    for i, ((voice, gap), s) in enumerate(zip(lines, said)):
        at += int(gap * RATE) if i else 0
        audio[at : at + s.size] = s
        truth.append(Spoken(voice, 0, at / RATE, (at + s.size) / RATE))
        at += s.size
    sf.write(str(path), audio, RATE, subtype="PCM_16")
    return truth


def der(truth: list[Spoken], hypothesis: list[tuple[str, float, float]], *, collar_s: float = 0.25,
        step_s: float = 0.01) -> float:
    """Diarization error rate of ``hypothesis`` ((speaker, start, end), ...) against one channel's ``truth``:
    missed, false-alarm and confused speech over the truth's speech, scored every ``step_s``, leaving out
    ``collar_s`` either side of every truth boundary, speakers matched one-to-one (Hungarian) for least error."""
    from scipy.optimize import linear_sum_assignment

    end = max([t.end for t in truth] + [e for _, _, e in hypothesis])
    times = np.arange(0, end, step_s) + step_s / 2
    scored = np.ones(times.size, bool)
    for t in truth:
        for edge in (t.start, t.end):
            scored &= np.abs(times - edge) > collar_s
    refs = sorted({t.voice for t in truth})
    hyps = sorted({h for h, _, _ in hypothesis})
    ref = np.full(times.size, -1)
    hyp = np.full(times.size, -1)
    for t in truth:
        ref[(times >= t.start) & (times < t.end)] = refs.index(t.voice)
    for h, a, b in hypothesis:
        hyp[(times >= a) & (times < b)] = hyps.index(h)
    ref, hyp = ref[scored], hyp[scored]
    overlap = np.zeros((len(refs), max(len(hyps), 1)))
    for r in range(len(refs)):
        for h in range(len(hyps)):
            overlap[r, h] = np.sum((ref == r) & (hyp == h))
    rows, cols = linear_sum_assignment(-overlap)
    correct = overlap[rows, cols].sum()
    speech = np.sum(ref >= 0)
    false_alarm = np.sum((ref < 0) & (hyp >= 0))
    return float((speech - correct + false_alarm) / speech)


# -- the scenarios the tests share -----------------------------------------------------------------------------

V = VOICES
TWO = [(V[0], 0), (V[1], 0.6), (V[0], 0), (V[1], 0.8), (V[0], 0.4)]  # turn changes with and without pauses
THREE = [(V[0], 0), (V[1], 0.6), (V[2], 0), (V[0], 0.8), (V[1], 0), (V[2], 0.5)]
FOUR = [(V[0], 0), (V[1], 0.6), (V[2], 0), (V[3], 0.8), (V[0], 0), (V[1], 0.5), (V[2], 0.7), (V[3], 0)]


@dataclass(frozen=True)
class Call:
    """A two-channel call with known conversation: who spoke when per channel, the overlaps (start, end) and
    the interruptions (at, by channel, of channel)."""

    truth: list[Spoken]
    overlaps: list[tuple[float, float]]
    interruptions: list[tuple[float, int, int]]
    silences: list[tuple[float, float]]


def call(path: str | Path, *, room: bool = False) -> Call:
    """Channel 0 (an agent; with ``room`` two voices in turn) and channel 1 (a customer): the customer answers
    after a pause, the agent cuts in while the customer is mid-sentence and goes on (an interruption and an
    overlap), a silence of 2.6 s, the customer says a long sentence under which the agent says a short
    "Yes." (an overlap, no interruption: too short), then the agent (or the room's second voice)
    answers after a pause."""
    agent, customer, second = V[0], V[1], V[2] if room else V[0]
    lines = [(agent, TEXTS[1]), (customer, TEXTS[3]), (agent, TEXTS[4]), (customer, TEXTS[0]),
             (agent, "Yes."), (second, TEXTS[5])]
    s = [speak(v, t).size / RATE for v, t in lines]
    starts = [0.5]
    starts.append(starts[0] + s[0] + 0.7)  # the customer answers after a pause
    starts.append(starts[1] + 1.8)  # the agent cuts in, mid-sentence
    starts.append(max(starts[1] + s[1], starts[2] + s[2]) + 2.6)  # a long silence, then the customer
    starts.append(starts[3] + 1.0)  # "Yes." under the customer's sentence
    starts.append(starts[3] + s[3] + 0.8)
    script = [Utterance(v, t, round(a, 3), 1 if v == customer else 0) for (v, t), a in zip(lines, starts)]
    truth = write(path, script, channels=2)
    overlaps = [(starts[2], min(starts[1] + s[1], starts[2] + s[2])), (starts[4], starts[4] + s[4])]
    gap = (max(starts[1] + s[1], starts[2] + s[2]), starts[3])
    return Call(truth, overlaps, [(starts[2], 0, 1)], [gap])
