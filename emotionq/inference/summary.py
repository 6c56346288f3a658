"""A channel's segments summed up: how much of its speech each label holds, which dominates, the strongest
segment of each label, and when the label changes."""

from __future__ import annotations


def summarize(segments: list[dict]) -> dict:
    """The summary of one channel's scored ``segments`` (each with start, end, label, score), in time order.

    ``share`` is the fraction of speech time whose segment has that top label (labels without speech are
    left out); ``dominant_label`` the label of the largest share (None without speech); ``strongest`` per
    label the segment where that label scored highest as the top label; ``changes`` each point where the
    top label differs from the segment before.
    """
    ordered = sorted(segments, key=lambda s: s["start"])
    speech = sum(s["end"] - s["start"] for s in ordered)
    seconds: dict[str, float] = {}
    strongest: dict[str, dict] = {}
    for s in ordered:
        seconds[s["label"]] = seconds.get(s["label"], 0.0) + s["end"] - s["start"]
        best = strongest.get(s["label"])
        if best is None or s["score"] > best["score"]:
            strongest[s["label"]] = {"start": s["start"], "end": s["end"], "score": s["score"]}
    share = {label: round(t / speech, 4) for label, t in sorted(seconds.items(), key=lambda kv: -kv[1])} \
        if speech > 0 else {}
    changes = [{"at": b["start"], "from": a["label"], "to": b["label"]}
               for a, b in zip(ordered, ordered[1:]) if a["label"] != b["label"]]
    return {"speech_s": round(speech, 3), "share": share, "dominant_label": next(iter(share), None),
            "strongest": strongest, "changes": changes}
