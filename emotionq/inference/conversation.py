"""How a conversation went, from its scored segments: per party (a speaker, or a channel) talk time and
emotion, and across parties turns, silences, overlaps and interruptions.

Definitions (those of call analytics: AWS Transcribe's talk time, non-talk time and interruptions):

- a **turn** is a run of one party's segments, in order of start, that no other party's segment starts
  inside; a segment said wholly under another party's speech (a "yes" while the other talks) takes no
  turn; the **longest monologue** is the longest turn, from its first start to its last end;
- **non-talk** is a stretch of the recording (its start and end included) where no party speaks, counted when
  longer than ``NON_TALK_S``;
- an **overlap** is a stretch where two or more parties speak at once, counted when at least ``OVERLAP_S``
  long (shorter ones are the detector's padding at a quick turn change, not talk over talk);
- an **interruption** is a party starting to speak while another is mid-turn (still speaking at least
  ``OVERLAP_S`` past that start) and going on for at least ``INTERRUPTION_S``.
"""

from __future__ import annotations

from emotionq.inference.labels import LABELS, summary
from emotionq.inference.summary import summarize

NON_TALK_S = 2.0
OVERLAP_S = 0.2
INTERRUPTION_S = 1.0


def speakers(segments: list[dict]) -> list[dict]:
    """Per speaker (segments' ``speaker``), in order of first speech: channels, speech time, share of the
    talk, the speech-weighted scores and top label, and the summary the channels have."""
    names = list(dict.fromkeys(s["speaker"] for s in sorted(segments, key=lambda s: s["start"])))
    talk = sum(s["end"] - s["start"] for s in segments)
    out = []
    for name in names:
        mine = [s for s in segments if s["speaker"] == name]
        speech = sum(s["end"] - s["start"] for s in mine)
        out.append({"name": name, "channels": sorted({s["channel"] for s in mine}), "speech_s": round(speech, 3),
                    "share": round(speech / talk, 4) if talk else 0.0, **_weighted(mine),
                    "summary": summarize(mine)})
    return out


def metrics(segments: list[dict], *, by: str, duration_s: float) -> dict:
    """The conversation between the parties that ``by`` names ("speaker" or "channel") in ``segments``."""
    ordered = sorted(segments, key=lambda s: (s["start"], s[by]))
    parties = list(dict.fromkeys(s[by] for s in ordered))
    spans = {p: _union([(s["start"], s["end"]) for s in ordered if s[by] == p]) for p in parties}
    turns = _turns([s for s in ordered if not _under(s, by, spans)], by)
    overlaps = _overlaps(spans)
    interruptions = _interruptions(turns, spans)
    talk = sum(e - s for p in parties for s, e in spans[p])
    per_party = []
    for p in parties:
        mine = [t for t in turns if t["party"] == p]
        speech = sum(e - s for s, e in spans[p])
        longest = max((t["end"] - t["start"] for t in mine), default=0.0)  # none: all said under the others
        per_party.append({
            "name": p, "talk_s": round(speech, 3), "talk_ratio": round(speech / talk, 4) if talk else 0.0,
            "turns": len(mine), "longest_monologue_s": round(longest, 3),
            "interrupted_others": sum(i["by"] == p for i in interruptions),
            "was_interrupted": sum(i["of"] == p for i in interruptions)})
    silences = _gaps(_union([x for p in parties for x in spans[p]]), duration_s)
    longest_turn = max(turns, key=lambda t: t["end"] - t["start"], default=None)
    return {
        "parties_are": by + "s", "parties": per_party,
        "non_talk": {"over_s": NON_TALK_S, "total_s": round(sum(b - a for a, b in silences), 3),
                     "longest_s": round(max((b - a for a, b in silences), default=0.0), 3), "count": len(silences)},
        "overlap": {"total_s": round(sum(o["end"] - o["start"] for o in overlaps), 3), "count": len(overlaps),
                    "events": overlaps},
        "interruptions": {"count": len(interruptions), "events": interruptions},
        "longest_monologue": None if longest_turn is None else {
            k: longest_turn[k] for k in ("party", "start", "end")} | {
            "seconds": round(longest_turn["end"] - longest_turn["start"], 3)},
        "turns": turns,
    }


def _weighted(segments: list[dict]) -> dict:
    weights = [s["end"] - s["start"] for s in segments]
    total = sum(weights)
    mean = [sum(w * s["scores"][k] for w, s in zip(weights, segments)) / total for k in LABELS]
    return summary(mean)


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _turns(ordered: list[dict], by: str) -> list[dict]:
    """Runs of one party's segments (in order of start), each with its speech-weighted top label."""
    runs: list[list[dict]] = []
    for s in ordered:
        if runs and runs[-1][0][by] == s[by]:
            runs[-1].append(s)
        else:
            runs.append([s])
    turns = []
    for run in runs:
        w = _weighted(run)
        turns.append({"party": run[0][by], "start": run[0]["start"], "end": max(s["end"] for s in run),
                      "segments": len(run), "top_label": w["top_label"], "top_score": w["top_score"]})
    return turns


def _under(segment: dict, by: str, spans: dict[str, list[tuple[float, float]]]) -> bool:
    """Whether ``segment`` lies wholly inside another party's speech."""
    return any(a <= segment["start"] and segment["end"] <= b
               for p, talk in spans.items() if p != segment[by] for a, b in talk)


def _gaps(talk: list[tuple[float, float]], duration_s: float) -> list[tuple[float, float]]:
    edges = [0.0] + [x for span in talk for x in span] + [duration_s]
    return [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b - a > NON_TALK_S]


def _overlaps(spans: dict[str, list[tuple[float, float]]]) -> list[dict]:
    """Stretches where two or more parties speak at once (``OVERLAP_S`` or longer), and who."""
    edges = sorted({x for p in spans for span in spans[p] for x in span})
    found: list[dict] = []
    for a, b in zip(edges, edges[1:]):
        mid = (a + b) / 2
        who = sorted(p for p in spans if any(s <= mid < e for s, e in spans[p]))
        if len(who) < 2:
            continue
        if found and found[-1]["end"] == a:
            found[-1]["end"] = b
            found[-1]["parties"] = sorted(set(found[-1]["parties"]) | set(who))
        else:
            found.append({"start": a, "end": b, "parties": who})
    return [{**o, "start": round(o["start"], 3), "end": round(o["end"], 3)}
            for o in found if o["end"] - o["start"] >= OVERLAP_S]


def _interruptions(turns: list[dict], spans: dict[str, list[tuple[float, float]]]) -> list[dict]:
    """Turns that start while another party is still speaking (for ``OVERLAP_S`` or more) and go on for
    ``INTERRUPTION_S`` or more: who interrupted whom, and when."""
    out = []
    for turn in turns:
        at, by = turn["start"], turn["party"]
        going_on = next((e for s, e in spans[by] if s <= at < e), at) - at
        if going_on < INTERRUPTION_S:
            continue
        for other, talk in spans.items():
            if other != by and any(s < at and e - at >= OVERLAP_S for s, e in talk):
                out.append({"at": round(at, 3), "by": by, "of": other})
    return out
