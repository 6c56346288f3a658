"""A channel's summary from its segments."""

from __future__ import annotations

import pytest

from emotionq.inference.summary import summarize


def _seg(start, end, label, score):
    return {"channel": "agent", "start": start, "end": end, "label": label, "score": score, "scores": {}}


def test_share_dominant_strongest_and_changes():
    segments = [_seg(4.0, 7.0, "angry", 0.7), _seg(0.0, 2.0, "neutral", 0.6), _seg(8.0, 9.0, "angry", 0.9),
                _seg(10.0, 11.0, "neutral", 0.8)]
    summary = summarize(segments)
    assert summary["speech_s"] == 7.0
    assert summary["share"] == {"angry": pytest.approx(4 / 7, abs=1e-4), "neutral": pytest.approx(3 / 7, abs=1e-4)}
    assert list(summary["share"]) == ["angry", "neutral"]  # largest share first
    assert summary["dominant_label"] == "angry"
    assert summary["strongest"] == {"angry": {"start": 8.0, "end": 9.0, "score": 0.9},
                                    "neutral": {"start": 10.0, "end": 11.0, "score": 0.8}}
    assert summary["changes"] == [{"at": 4.0, "from": "neutral", "to": "angry"},
                                  {"at": 10.0, "from": "angry", "to": "neutral"}]


def test_no_speech():
    assert summarize([]) == {"speech_s": 0, "share": {}, "dominant_label": None, "strongest": {}, "changes": []}
