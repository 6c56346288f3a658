"""The recordings ``EmotionModel.predict_batch`` is given, checked as ``predict`` checks one, each with the
windows it is scored in: fixed windows, or the sample ranges its options name (speech segments)."""

from __future__ import annotations

import numpy as np

from emotionq.errors import AudioError
from emotionq.inference.audio import MIN_SAMPLES, SAMPLE_RATE, check_samples
from emotionq.inference.windows import FRAME_STRIDE, window_bounds

GRANULARITIES = ("utterance", "frame")
OPTIONS = ("granularity", "embedding", "bounds")  # predict_batch's per-recording options (bounds: its own windows)


def checked_items(items: list[np.ndarray], options: list[dict] | None,
                   window_s: float) -> tuple[list[dict | Exception | None], list[dict]]:
    """(results so far: the exception of each item that fails its checks; the items that pass them)."""
    results: list[dict | Exception | None] = [None] * len(items)
    checked: list[dict] = []
    for index, samples in enumerate(items):
        try:
            checked.append(_item(index, samples, (options or [None] * len(items))[index], window_s))
        except (AudioError, ValueError, TypeError) as exc:
            results[index] = exc
    return results, checked


def _item(index: int, samples: np.ndarray, options: dict | None, window_s: float) -> dict:
    """One recording of predict_batch, checked as predict checks it, with its windows."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"unknown options {unknown}: predict takes {', '.join(OPTIONS)}")
    granularity = options.get("granularity", "utterance")
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, not {granularity!r}")
    samples = check_samples(np.ascontiguousarray(samples, dtype=np.float32).reshape(-1))
    return {
        "index": index,
        "samples": samples,
        "bounds": _bounds(options.get("bounds"), samples.size, window_s),
        "granularity": granularity,
        "embedding": bool(options.get("embedding", False)),
    }


def _bounds(given: list | None, n_samples: int, window_s: float) -> list[tuple[int, int]]:
    """The item's windows: ``window_bounds``, or the sample ranges it names (speech segments), each checked
    to lie in the recording, hold at least ``MIN_SAMPLES`` and at most a window's samples."""
    if given is None:
        return window_bounds(n_samples, window_s, sample_rate=SAMPLE_RATE)
    longest = int(window_s * SAMPLE_RATE) // FRAME_STRIDE * FRAME_STRIDE
    bounds = [(int(a), int(b)) for a, b in given]
    if not bounds or any(not (0 <= a and a + MIN_SAMPLES <= b <= n_samples and b - a <= longest) for a, b in bounds):
        raise ValueError(f"bounds must be sample ranges of {MIN_SAMPLES} to {longest} samples within the recording")
    return bounds
