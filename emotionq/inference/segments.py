"""Where the speech is: Silero VAD on onnxruntime (no torch), and long speech cut at its quietest points.

The detector is the ``silero-vad`` wheel's "sequence" ONNX graph (``silero_vad_16k_sequence.onnx``): the
same LSTM as the streaming model, its state carried across 512-sample frames (32 ms at 16 kHz), but one
ONNX call per block of frames instead of one per frame, with the per-frame probabilities identical. The
probabilities become speech spans by silero's own state machine (``get_speech_timestamps``), re-written
here in a dozen lines: speech starts at ``threshold``, ends after ``min_silence_ms`` below
``threshold - 0.15``, spans shorter than ``min_speech_ms`` are dropped and the rest padded by
``speech_pad_ms`` (half the gap each where two spans are closer than twice that).

Spans longer than the model's window are cut (``split``) at the quietest point of their librosa RMS
envelope within the range that keeps every piece at most the window's length.
"""

from __future__ import annotations

import importlib.util
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from emotionq.errors import ConfigurationError
from emotionq.inference.audio import SAMPLE_RATE
from emotionq.inference.windows import FRAME_STRIDE
from emotionq.vad import VadOptions

FRAME = 512  # samples per VAD frame at 16 kHz
CONTEXT = 64  # samples of the previous frame each frame sees (silero's streaming context)
BLOCK_FRAMES = 512  # frames per ONNX call (16 s of audio)
MODEL_FILE = "silero_vad_16k_sequence.onnx"
RMS_FRAME = 640  # samples per RMS frame (40 ms) for finding quiet points; hop = FRAME_STRIDE (20 ms)
MIN_PIECE_S = 1.0  # a cut of long speech leaves no piece shorter than this (or a quarter of what it cuts)


class VoiceDetector:
    """Silero VAD's sequence graph in one onnxruntime session (one thread: it is cheap next to the model)."""

    def __init__(self, path: str | Path | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.inter_op_num_threads = opts.intra_op_num_threads = 1
        self._session = ort.InferenceSession(str(path or model_path()), sess_options=opts,
                                             providers=["CPUExecutionProvider"])
        self._lock = threading.Lock()

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """Speech probability of each 512-sample frame of 16 kHz ``samples`` (the last one zero-padded)."""
        count = -(-samples.size // FRAME)
        frames = np.zeros((count, FRAME), np.float32)
        frames.reshape(-1)[: samples.size] = samples
        contexts = np.zeros((count, CONTEXT), np.float32)
        contexts[1:] = frames[:-1, -CONTEXT:]
        inputs = np.concatenate((contexts, frames), axis=1)
        hidden = cell = np.zeros((1, 1, 128), np.float32)
        out = []
        with self._lock:
            for first in range(0, count, BLOCK_FRAMES):
                probs, hidden, cell = self._session.run(
                    ["speech_probs", "hn", "cn"], {"input": inputs[first : first + BLOCK_FRAMES], "h": hidden, "c": cell})
                out.append(probs.reshape(-1))
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def speech(self, samples: np.ndarray, options: VadOptions = VadOptions()) -> list[tuple[int, int]]:
        """Speech spans ``[(start, end), ...]`` in samples, padded, in order, not overlapping."""
        return spans(self.probabilities(samples), samples.size, options)


@lru_cache(maxsize=1)
def detector() -> VoiceDetector:
    """The process's detector, loaded on first use (once per worker process)."""
    return VoiceDetector()


def warm_up() -> None:
    """Load the detector and librosa now (a worker does at start), not in the first job: ConfigurationError
    if silero-vad is missing."""
    quiet = np.zeros(SAMPLE_RATE, np.float32)
    detector().speech(quiet)
    split(quiet, [(0, quiet.size)], 0.5)


def model_path() -> Path:
    """The ONNX file inside the installed ``silero-vad`` wheel (found without importing it: it imports torch)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError("segmentation=vad needs the silero-vad package: pip install silero-vad==6.2.3")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / MODEL_FILE
    if not path.is_file():
        raise ConfigurationError(f"silero-vad is installed without its {MODEL_FILE}: reinstall silero-vad==6.2.3")
    return path


def spans(probs: np.ndarray, n_samples: int, options: VadOptions) -> list[tuple[int, int]]:
    """silero's ``get_speech_timestamps`` state machine over frame probabilities (no maximum span length:
    long spans are ``split`` at quiet points instead)."""
    rate = SAMPLE_RATE / 1000
    min_speech, min_silence, pad = (options.min_speech_ms * rate, options.min_silence_ms * rate,
                                    options.speech_pad_ms * rate)
    negative = max(options.threshold - 0.15, 0.01)
    found: list[list[int]] = []
    start, quiet_since = None, 0
    for i, prob in enumerate(probs):
        at = i * FRAME
        if prob >= options.threshold:
            quiet_since = 0
            if start is None:
                start = at
        elif prob < negative and start is not None:
            quiet_since = quiet_since or at
            if at - quiet_since >= min_silence:
                if quiet_since - start > min_speech:
                    found.append([start, quiet_since])
                start, quiet_since = None, 0
    if start is not None and n_samples - start > min_speech:
        found.append([start, n_samples])
    return _padded(found, n_samples, pad)


def _padded(found: list[list[int]], n_samples: int, pad: float) -> list[tuple[int, int]]:
    for i, span in enumerate(found):
        if i == 0:
            span[0] = int(max(0, span[0] - pad))
        if i + 1 < len(found):
            gap = found[i + 1][0] - span[1]
            share = gap // 2 if gap < 2 * pad else pad
            span[1] = int(span[1] + share)
            found[i + 1][0] = int(max(0, found[i + 1][0] - share))
        else:
            span[1] = int(min(n_samples, span[1] + pad))
    return [(a, b) for a, b in found if b > a]


def split(samples: np.ndarray, bounds: list[tuple[int, int]], window_s: float) -> list[tuple[int, int]]:
    """``bounds`` with every span longer than ``window_s`` cut into pieces of at most that length: cut at the
    quietest point (lowest RMS energy, from librosa), then each side again while it is too long."""
    max_len = int(window_s * SAMPLE_RATE) // FRAME_STRIDE * FRAME_STRIDE
    out: list[tuple[int, int]] = []
    for a, b in bounds:
        if b - a <= max_len:
            out.append((a, b))
            continue
        import librosa

        rms = librosa.feature.rms(y=samples[a:b], frame_length=RMS_FRAME, hop_length=FRAME_STRIDE, center=True)[0]
        out.extend((a + x, a + y) for x, y in _halves(rms, 0, b - a, max_len))
    return out


def _halves(rms: np.ndarray, a: int, b: int, max_len: int) -> list[tuple[int, int]]:
    """``[a, b)`` (offsets in the span) cut at its RMS minimum, keeping both sides at least ``MIN_PIECE_S``
    long (or a quarter of the span), recursively until every piece fits ``max_len``."""
    if b - a <= max_len:
        return [(a, b)]
    margin = min(int(MIN_PIECE_S * SAMPLE_RATE), (b - a) // 4)
    lo, hi = -(-(a + margin) // FRAME_STRIDE), (b - margin) // FRAME_STRIDE
    cut = (lo + int(np.argmin(rms[lo : hi + 1]))) * FRAME_STRIDE if hi >= lo else (a + b) // 2
    return _halves(rms, a, cut, max_len) + _halves(rms, cut, b, max_len)
