"""Where long recordings are cut, so that model memory stays bounded.

emotion2vec attends over the whole input (memory grows with the square of its
length, and funasr's ALiBi bias cache keeps the largest size it has seen), so
recordings longer than ``window_s`` are split into ``ceil(duration / window_s)``
windows of near-equal length. Even splitting never leaves a tiny last window,
and every boundary falls on the 320-sample frame stride (20 ms at 16 kHz) so
the windows' frames line up with those of the whole recording.
"""

from __future__ import annotations

import math

FRAME_STRIDE = 320  # samples per emotion2vec frame at 16 kHz (50 frames per second)


def window_bounds(n_samples: int, window_s: float, *, sample_rate: int = 16000) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` sample ranges covering ``n_samples``, each at most ``window_s`` long."""
    if window_s < 1.0:
        raise ValueError(f"window_s must be at least 1 second, not {window_s}")
    max_len = int(window_s * sample_rate) // FRAME_STRIDE * FRAME_STRIDE
    count = max(1, math.ceil(n_samples / max_len))
    per = FRAME_STRIDE * count  # edge i = n * i / count, rounded up to the stride (integer arithmetic)
    edges = [min(n_samples, FRAME_STRIDE * -(-i * n_samples // per)) for i in range(count)] + [n_samples]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]
