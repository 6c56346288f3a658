"""Where long recordings are cut (so that model memory stays bounded), and which windows share a pass.

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
MAX_PAD_RATIO = 1.25  # padded samples of a forward pass / its real samples, at most


def window_bounds(n_samples: int, window_s: float, *, sample_rate: int = 16000) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` sample ranges covering ``n_samples``, each at most ``window_s`` long."""
    if window_s < 1.0:
        raise ValueError(f"window_s must be at least 1 second, not {window_s}")
    max_len = int(window_s * sample_rate) // FRAME_STRIDE * FRAME_STRIDE
    count = max(1, math.ceil(n_samples / max_len))
    per = FRAME_STRIDE * count  # edge i = n * i / count, rounded up to the stride (integer arithmetic)
    edges = [min(n_samples, FRAME_STRIDE * -(-i * n_samples // per)) for i in range(count)] + [n_samples]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def group_windows(
    lengths: list[int], *, max_windows: int, max_samples: int, max_pad_ratio: float = MAX_PAD_RATIO
) -> list[list[int]]:
    """Forward passes for windows of ``lengths`` samples: lists of indices, longest window first.

    Windows are sorted longest first (ties in input order) and taken greedily in that order:
    a window joins the current pass while the pass then holds at most ``max_windows`` windows,
    at most ``max_samples`` padded samples (windows x its first, longest, window) and at most
    ``max_pad_ratio`` x its real samples; otherwise it starts the next pass. A window that
    alone exceeds ``max_samples`` gets a pass of its own. Memory per pass is bounded by the
    padded samples (conv encoder) and by padded samples x longest window (attention).
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    groups: list[list[int]] = []
    real = 0
    for i in order:
        if groups:
            group = groups[-1]
            padded = (len(group) + 1) * lengths[group[0]]
            if (
                len(group) < max_windows
                and padded <= max_samples
                and padded <= max_pad_ratio * (real + lengths[i])
            ):
                group.append(i)
                real += lengths[i]
                continue
        groups.append([i])
        real = lengths[i]
    return groups
