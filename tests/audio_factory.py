"""Real speech recordings for tests: espeak-ng speaks, sox shapes, ffmpeg encodes."""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
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
