"""The nine emotion classes of the emotion2vec+ models, in their token order.

funasr reports labels as the bilingual tokens of ``tokens.txt``; emotionq
reports them in English.
"""

from __future__ import annotations

import numpy as np

from emotionq import LABELS

TOKENS: tuple[str, ...] = (
    "生气/angry",
    "厌恶/disgusted",
    "恐惧/fearful",
    "开心/happy",
    "中立/neutral",
    "其他/other",
    "难过/sad",
    "吃惊/surprised",
    "<unk>",
)


def english(label: str) -> str:
    """English name of a funasr label: ``"生气/angry"`` -> ``"angry"``, ``"<unk>"`` -> ``"unknown"``."""
    if label == "<unk>":
        return "unknown"
    return label.rsplit("/", 1)[-1].strip()


def summary(scores, *, top_score: bool = True) -> dict:
    """Nine scores (in ``LABELS`` order) as outputs show them: by label, the top label, and its score."""
    top = int(np.argmax(scores))
    out = {"scores": dict(zip(LABELS, (float(s) for s in scores))), "top_label": LABELS[top]}
    if top_score:
        out["top_score"] = float(scores[top])
    return out
