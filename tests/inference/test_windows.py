"""emotionq.inference.windows: how long recordings are cut."""

from __future__ import annotations

import pytest

from emotionq.inference.windows import FRAME_STRIDE, window_bounds


def test_short_audio_is_one_window():
    assert window_bounds(48000, 30.0) == [(0, 48000)]
    assert window_bounds(30 * 16000, 30.0) == [(0, 30 * 16000)]


def test_long_audio_is_split_evenly_on_the_frame_stride():
    bounds = window_bounds(70 * 16000, 30.0)

    assert len(bounds) == 3
    assert bounds[0][0] == 0 and bounds[-1][1] == 70 * 16000
    assert all(end % FRAME_STRIDE == 0 for _, end in bounds[:-1])
    assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= FRAME_STRIDE


@pytest.mark.parametrize("n", [30 * 16000 + 1, 61 * 16000, 3600 * 16000 + 123, 16000 * 30 * 7])
@pytest.mark.parametrize("window_s", [1.0, 7.5, 30.0])
def test_windows_cover_everything_and_never_exceed_the_limit(n, window_s):
    bounds = window_bounds(n, window_s)

    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert all(0 < b - a <= window_s * 16000 for a, b in bounds)
    assert min(b - a for a, b in bounds) >= window_s * 16000 / 2 - 2 * FRAME_STRIDE  # no tiny remainder


def test_window_must_be_at_least_a_second():
    with pytest.raises(ValueError):
        window_bounds(16000, 0.5)
