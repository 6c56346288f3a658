"""Emotion over time inside a window: ``granularity=frame``'s per-frame scores.

The model's head (``proj``, trained on whole utterances: the mean of all their frames) is applied to the
mean of the frames within ``WINDOW_S`` around each point, ``RATE_HZ`` points a second: so each point is what
the model would say of that half second pooled as if it were an utterance. They show where in a segment
an emotion rises or falls; they are not a per-frame classifier (none was trained), and a single point
weighs less than a segment's score.
"""

from __future__ import annotations

from emotionq import LABELS
from emotionq.inference.windows import FRAME_STRIDE

RATE_HZ = 10
WINDOW_S = 0.5


def over_windows(module, windows: list[dict], starts_s: list[float], *, sample_rate: int) -> dict:
    """The frame scores of a recording's scored windows (each with its ``frames``, n x D), from their starts in
    seconds: ``{rate, window_s, labels, t, scores}``, ``t`` the points' times and ``scores`` one row of nine
    per point, in ``labels`` order."""
    import torch

    frame_rate = sample_rate // FRAME_STRIDE
    hop, half = frame_rate // RATE_HZ, int(WINDOW_S * frame_rate) // 2
    times, pooled = [], []
    for window, start in zip(windows, starts_s):
        frames = window["frames"].float()
        n = frames.shape[0]
        sums = torch.cat([frames.new_zeros(1, frames.shape[1]), frames.double().cumsum(0).float()])
        for centre in range(hop // 2, n, hop):
            lo, hi = max(0, centre - half), min(n, centre + half + 1)
            pooled.append((sums[hi] - sums[lo]) / (hi - lo))
            times.append(round(start + (centre + 0.5) / frame_rate, 3))
    scores: list[list[float]] = []
    if pooled:
        device = next(module.parameters()).device
        with torch.inference_mode():
            probs = torch.softmax(module.proj(torch.stack(pooled).to(device)).float(), dim=-1)
        scores = [[round(p, 4) for p in row] for row in probs.cpu().tolist()]
    return {"rate": RATE_HZ, "window_s": WINDOW_S, "labels": list(LABELS), "t": times, "scores": scores}
