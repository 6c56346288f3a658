"""Real speech recordings for tests: espeak-ng speaks, sox shapes, ffmpeg encodes."""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TEXT = "I can't believe you did that again. Please, tell me what happened this morning."

# ffmpeg encoder per format; wav and flac are written by sox.
_ENCODERS = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k"],
    "ogg": ["-c:a", "libvorbis"],
    "m4a": ["-c:a", "aac", "-b:a", "64k"],
    "opus": ["-c:a", "libopus", "-b:a", "32k"],
    "webm": ["-c:a", "libopus", "-b:a", "32k"],
}


def make_speech(
    path: str | Path,
    *,
    seconds: float | None = None,
    text: str = DEFAULT_TEXT,
    rate: int = 16000,
    channels: int = 1,
    fmt: str = "wav",
) -> Path:
    """Write spoken ``text`` to ``path``: repeated and cut to ``seconds`` if given, at ``rate`` Hz."""
    path = Path(path)
    if fmt not in ("wav", "flac", *_ENCODERS):
        raise ValueError(f"unknown format {fmt!r}")
    for tool in ("espeak-ng", "sox", "ffmpeg"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        spoken = Path(tmp) / "spoken.wav"
        subprocess.run(["espeak-ng", "-w", str(spoken), text], check=True, capture_output=True)
        effects: list[str] = []
        if seconds is not None:
            soxi = subprocess.run(["soxi", "-D", str(spoken)], check=True, capture_output=True, text=True)
            spoken_s = float(soxi.stdout)
            repeats = max(0, math.ceil(seconds / spoken_s) - 1)
            effects = (["repeat", str(repeats)] if repeats else []) + ["trim", "0", f"{seconds}"]
        shaped = path if fmt in ("wav", "flac") else Path(tmp) / "shaped.wav"
        subprocess.run(
            ["sox", str(spoken), "-r", str(rate), "-c", str(channels), "-b", "16", str(shaped), *effects],
            check=True,
            capture_output=True,
        )
        if fmt in _ENCODERS:
            subprocess.run(
                ["ffmpeg", "-loglevel", "error", "-y", "-i", str(shaped), *_ENCODERS[fmt], str(path)],
                check=True,
                capture_output=True,
            )
    return path


def make_turns(path: str | Path, turns: list[str | float], *, rate: int = 16000) -> list[tuple[float, float]]:
    """Write ``turns`` to ``path``: each a text spoken by espeak-ng (its own leading and trailing silence
    trimmed by sox) or seconds of digital silence, joined in order. Returns the speech spans (start, end)
    in seconds, as sox measured them."""
    path = Path(path)
    spans, at = [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        parts = []
        for i, turn in enumerate(turns):
            part = Path(tmp) / f"part{i}.wav"
            if isinstance(turn, str):
                spoken = Path(tmp) / f"spoken{i}.wav"
                subprocess.run(["espeak-ng", "-w", str(spoken), turn], check=True, capture_output=True)
                subprocess.run(["sox", str(spoken), "-r", str(rate), "-c", "1", "-b", "16", str(part),
                                "silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%", "reverse"],
                               check=True, capture_output=True)
            else:
                subprocess.run(["sox", "-n", "-r", str(rate), "-c", "1", "-b", "16", str(part), "trim", "0",
                                f"{turn}"], check=True, capture_output=True)
            seconds = float(subprocess.run(["soxi", "-D", str(part)], check=True, capture_output=True,
                                           text=True).stdout)
            if isinstance(turn, str):
                spans.append((at, at + seconds))
            at += seconds
            parts.append(str(part))
        subprocess.run(["sox", *parts, str(path)], check=True, capture_output=True)
    return spans


def make_channels(path: str | Path, channels: list[str | Path]) -> Path:
    """Merge mono files of equal rate into one multi-channel file (sox -M), shorter ones padded with silence."""
    subprocess.run(["sox", "-M", *map(str, channels), str(path)], check=True, capture_output=True)
    return Path(path)


# -- a corpus of bad (and borderline) uploads ------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One upload of the bad-input corpus and what the service must make of it.

    ``expect`` is ``("rejected", http_status, code)`` (refused at upload), ``("failed", code)`` (accepted,
    then the job fails with that error code) or ``("succeeded",)``. ``duration_s`` is the duration the
    job must report for accepted cases (None: not checked).
    """

    name: str
    path: Path
    expect: tuple
    duration_s: float | None = None

    @property
    def outcome(self) -> str:
        return self.expect[0]


def _salted_speech(path: Path, rng, *, seconds: float, rate: int = 16000, channels: int = 1) -> Path:
    """``make_speech`` plus a random tail of 1-64 quiet samples: bytes no other file (or test run) has."""
    import numpy as np
    import soundfile as sf

    spoken = make_speech(path.with_suffix(".spoken.wav"), seconds=seconds, rate=rate, channels=channels)
    data, _ = sf.read(spoken, dtype="int16", always_2d=True)
    spoken.unlink()
    tail = rng.integers(-50, 50, size=(int(rng.integers(1, 65)), channels), dtype="int16")
    sf.write(path, np.concatenate([data, tail]), rate, subtype="PCM_16")
    return path


def _encode(wav: Path, path: Path, rng, *args: str) -> Path:
    """ffmpeg ``wav`` -> ``path`` with encoder ``args`` and a random comment tag (distinct bytes)."""
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), *args, "-metadata",
                    f"comment={rng.integers(1 << 62):x}", str(path)], check=True, capture_output=True)
    return path


def claim_duration(webm: Path, seconds: float) -> Path:
    """Rewrite the Duration a WebM (Matroska) header states, leaving the audio as it is."""
    import struct

    data = bytearray(webm.read_bytes())
    at = data.find(b"\x44\x89\x88")  # Segment Info > Duration, an 8-byte float in milliseconds
    assert at > 0, "no 8-byte Duration element in the WebM header"
    data[at + 3:at + 11] = struct.pack(">d", seconds * 1000)
    webm.write_bytes(bytes(data))
    return webm


def make_corpus(directory: str | Path, *, max_upload_bytes: int = 2_000_000,
                max_audio_seconds: float = 20.0) -> list[Case]:
    """Write the bad-input corpus into ``directory``, for a service with these limits.

    Every file is built from real speech (espeak-ng), numpy, soundfile, sox and ffmpeg, and every
    accepted one holds random bytes, so no two files (nor two calls) share a SHA-256 and dedup never
    joins them. Rejected files need no salt: nothing of them is kept.
    """
    import struct

    import numpy as np
    import soundfile as sf

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng()
    cases: list[Case] = []

    def add(name: str, expect: tuple, duration_s: float | None = None) -> Path:
        path = directory / name
        cases.append(Case(name, path, expect, duration_s))
        return path

    undecodable = ("rejected", 422, "audio_undecodable")
    speech = _salted_speech(directory / "source.wav", rng, seconds=3.0)  # 16 kHz mono int16, 44-byte header
    raw = speech.read_bytes()
    assert raw[36:40] == b"data", "expected a canonical 44-byte WAV header"
    pcm, _ = sf.read(speech, dtype="float32")

    # -- empty and truncated
    add("empty.wav", undecodable).write_bytes(b"")
    add("cut_in_header.wav", undecodable).write_bytes(raw[:30])  # RIFF and half the fmt chunk
    add("header_only.wav", undecodable).write_bytes(raw[:44])  # declares 3 s, holds none
    sf.write(add("no_frames.wav", ("rejected", 422, "audio_empty")), np.zeros(0, "int16"), 16000)
    add("cut_mid_data.wav", ("succeeded",), 1.5).write_bytes(raw[: 44 + 2 * 24000])  # what is there is scored
    mp3 = _encode(speech, directory / "whole.mp3", rng, "-c:a", "libmp3lame", "-b:a", "64k")
    add("cut_mid_stream.mp3", ("succeeded",), None).write_bytes(mp3.read_bytes()[: mp3.stat().st_size // 2])

    # -- headers that lie
    lying = bytearray(raw)
    lying[4:8], lying[40:44] = struct.pack("<I", 0x7FFFFF24), struct.pack("<I", 0x7FFFFF00)  # ~2 GB of data
    add("lying_data_size.wav", ("succeeded",), 3.0).write_bytes(bytes(lying))
    lying = bytearray(raw)
    lying[24:28] = struct.pack("<I", 8000)  # 16 kHz samples, header says 8 kHz (byte rate still says 16 kHz)
    add("lying_sample_rate.wav", ("succeeded",), 6.0).write_bytes(bytes(lying))
    lying = bytearray(raw)  # 16-bit PCM read as 32-bit IEEE float: small negative samples become NaN
    lying[20:22], lying[28:32], lying[32:34], lying[34:36] = (struct.pack("<H", 3), struct.pack("<I", 64000),
                                                              struct.pack("<H", 4), struct.pack("<H", 32))
    as_float = np.frombuffer(raw[44:44 + (len(raw) - 44) // 4 * 4], "<f4")
    expect = ("failed", "audio_not_finite" if not np.isfinite(as_float).all() else "audio_out_of_range")
    add("lying_sample_format.wav", expect).write_bytes(bytes(lying))
    # a container whose header claims nearly the limit, holding 3 s: accounted as what it holds
    claim_duration(_encode(speech, add("claims_longer.webm", ("succeeded",), 3.0), rng, "-c:a", "libopus"),
                   max_audio_seconds - 1)
    # one that claims 3 s and holds twice the limit: decoding stops at the limit, whatever the header says
    over = _salted_speech(directory / "over.wav", rng, seconds=max_audio_seconds * 2, rate=8000)
    claim_duration(_encode(over, add("claims_shorter.webm", ("failed", "audio_too_long")), rng, "-c:a", "libopus",
                           "-b:a", "8k"), 3.0)
    over.unlink()

    # -- not audio, with an audio name
    add("random.mp3", undecodable).write_bytes(rng.bytes(40_000))
    add("random.wav", undecodable).write_bytes(rng.bytes(40_000))
    add("text.m4a", undecodable).write_bytes(b"meeting notes, not a recording\n" * 200)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=5:d=2",
                    "-c:v", "mpeg4", str(add("video_only.mp4", ("rejected", 422, "audio_undecodable")))],
                   check=True, capture_output=True)

    # -- odd but valid audio
    silence = np.zeros(3 * 16000 + int(rng.integers(1, 1000)), "int16")
    sf.write(add("silence.wav", ("succeeded",), len(silence) / 16000), silence, 16000)
    start = int(rng.integers(8000, 30000))  # somewhere inside the speech, plus a little noise
    blip = pcm[start:start + 400] + rng.normal(0, 1e-4, 400).astype("float32")
    sf.write(add("speech_25ms.wav", ("succeeded",), 0.025), blip, 16000, subtype="FLOAT")
    sf.write(add("speech_10ms.wav", ("rejected", 422, "audio_too_short")), blip[:160], 16000)
    _salted_speech(add("speech_8k.wav", ("succeeded",), 3.0), rng, seconds=3.0, rate=8000)
    _salted_speech(add("speech_48k.wav", ("succeeded",), 3.0), rng, seconds=3.0, rate=48000)
    stereo = _salted_speech(add("stereo_44k.wav", ("succeeded",), 3.0), rng, seconds=3.0, rate=44100, channels=2)
    subprocess.run(["sox", str(speech), str(add("speech.flac", ("succeeded",), 3.0))], check=True, capture_output=True)
    for fmt, args in (("mp3", ["-c:a", "libmp3lame", "-b:a", "64k"]), ("ogg", ["-c:a", "libvorbis"]),
                      ("opus", ["-c:a", "libopus", "-b:a", "32k"]), ("m4a", ["-c:a", "aac", "-b:a", "64k"]),
                      ("webm", ["-c:a", "libopus", "-b:a", "32k"])):
        _encode(stereo, add(f"speech.{fmt}", ("succeeded",), 3.0), rng, *args)
    (directory / "whole.mp3").rename(add("mp3_named.wav", ("succeeded",), 3.0))  # the name lies, the bytes do not

    # -- over the limits
    rate = 48000  # the byte limit with room to spare under the duration limit
    seconds = max_upload_bytes * 1.2 / (rate * 2 * 2)  # 16-bit stereo
    too_big = _salted_speech(add("over_byte_limit.wav", ("rejected", 413, "payload_too_large")), rng,
                             seconds=seconds, rate=rate, channels=2)
    assert too_big.stat().st_size > max_upload_bytes and seconds < max_audio_seconds
    huge = add("far_over_byte_limit.wav", ("rejected", 413, "payload_too_large"))  # refused by its Content-Length
    huge.write_bytes(raw[:44] + rng.bytes(3 * max_upload_bytes))
    long_s = max_audio_seconds + 5
    long_wav = _salted_speech(add("over_duration_limit.wav", ("rejected", 422, "audio_too_long")), rng,
                              seconds=long_s, rate=8000)
    _encode(long_wav, add("over_duration_limit.mp3", ("rejected", 422, "audio_too_long")), rng,
            "-c:a", "libmp3lame", "-b:a", "32k")
    assert long_wav.stat().st_size < max_upload_bytes

    # -- samples that are not numbers, or not sound levels
    for name, index, value in (("nan.wav", 1000, np.nan), ("inf.wav", -1, np.inf), ("minus_inf.wav", 5000, -np.inf)):
        bad = pcm.copy()
        bad[index] = value
        sf.write(add(name, ("failed", "audio_not_finite")), bad, 16000, subtype="FLOAT")
    sf.write(add("float_1e30.wav", ("failed", "audio_out_of_range")), pcm * 1e30, 16000, subtype="FLOAT")
    sf.write(add("float_unnormalised.wav", ("succeeded",), 3.0), pcm * 32768, 16000, subtype="FLOAT")

    speech.unlink()
    return cases


def distinct_clips(source, directory, count: int) -> list:
    """``count`` recordings no test has sent before: ``source`` plus k + 1 samples of near-silence."""
    import numpy as np
    import soundfile as sf

    data, rate = sf.read(source, dtype="int16")
    salt = np.random.default_rng().integers(1, 1000, size=8).astype("int16")  # unique to this call
    paths = []
    for k in range(count):
        path = directory / f"clip-{k:03d}.wav"
        tail = np.concatenate([np.zeros(k + 1, dtype="int16"), salt])
        sf.write(path, np.concatenate([data, tail]), rate, subtype="PCM_16")
        paths.append(path)
    return paths
