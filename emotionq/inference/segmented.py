"""A recording as its options ask it to be scored: which audio goes to the model (``tracks``), and the result
put together from what the model gave each track (``combine``).

``segmentation=fixed`` with ``channels=mix`` is the model's own result, unchanged: one track cut into
fixed windows. Otherwise each channel (the mix, or each channel of the file) is one track; with ``vad``
its speech segments (``emotionq.inference.segments``) are what the model scores, one segment per window,
and a channel without speech is not scored at all. Utterance scores are the speech-duration-weighted
mean of segment scores, per channel and over all channels.

With ``speakers`` each channel's segments are diarized (``emotionq.inference.speakers``) and re-cut where
the speaker changes; speakers are named S1, S2, ... in order of first speech over all channels. With
separate channels and speakers off, each channel is one speaker. The result then has ``speakers`` and the
``conversation`` between the speakers (``emotionq.inference.conversation``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from emotionq.inference import conversation, registry
from emotionq.inference.audio import MIN_SAMPLES, SAMPLE_RATE
from emotionq.inference.labels import LABELS, summary
from emotionq.inference.segments import VadOptions, detector, split
from emotionq.inference.summary import summarize
from emotionq.inference.windows import window_bounds

SEGMENT_KEYS = ("start", "end", "scores", "top_label")  # the emotion model's; other families add keys

@dataclass
class Track:
    """One channel to score: its samples, and the sample ranges the model scores (its windows or segments)."""

    name: str
    samples: np.ndarray
    bounds: list[tuple[int, int]] = field(default_factory=list)
    speakers: list[str] = field(default_factory=list)  # each bound's speaker (with speakers, or separate)


@dataclass
class Plan:
    """What one run scores: its tracks, how they were found, and how long finding the speech took."""

    tracks: list[Track]
    segmentation: str  # "vad" | "fixed"
    mixed: bool
    vad_s: float = 0.0
    diarize_s: float = 0.0
    diarized: bool = False  # speakers found by the encoder (else, with separate channels, one per channel)
    extras: bool = False  # other model families add keys to the segments (transcript=true)

    @property
    def unchanged(self) -> bool:
        """The model's result is the run's (fixed windows of the mix, the emotion model alone: the service's
        results before segments)."""
        return self.segmentation == "fixed" and self.mixed and not self.extras

    def scored(self) -> list[Track]:
        """The tracks the model has anything to score in."""
        return [t for t in self.tracks if t.bounds]

    def audio_s(self) -> float:
        """Seconds of audio the model will score."""
        return sum(b - a for t in self.scored() for a, b in t.bounds) / SAMPLE_RATE


def channel_names(options: dict, count: int) -> list[str]:
    if options.get("channels", "mix") != "separate":
        return ["mix"]
    return list(options.get("channel_names") or [f"ch{i + 1}" for i in range(count)])


def tracks(channels: list[np.ndarray], options: dict, *, window_s: float, device: str = "cpu") -> Plan:
    """The run's tracks: ``channels`` (one array per channel, or one: the mix) cut as ``options`` say.

    Runs queued before segments existed have no ``segmentation`` option: they are scored as then (fixed).
    """
    segmentation = options.get("segmentation", "fixed")
    names = channel_names(options, len(channels))
    plan = Plan([], segmentation, mixed=options.get("channels", "mix") != "separate",
                extras=bool(options.get("transcript")))
    began = time.perf_counter()
    for name, samples in zip(names, channels):
        if segmentation == "fixed":
            bounds = window_bounds(samples.size, window_s, sample_rate=SAMPLE_RATE)
        else:
            speech = detector().speech(samples, VadOptions.from_options(options))
            bounds = [(a, b) for a, b in split(samples, speech, window_s) if b - a >= MIN_SAMPLES]
        plan.tracks.append(Track(name, samples, bounds))
    plan.vad_s = time.perf_counter() - began if segmentation == "vad" else 0.0
    if "speakers" in options:
        began = time.perf_counter()
        _diarize(plan, options, device)
        plan.diarized, plan.diarize_s = True, time.perf_counter() - began
    elif not plan.mixed and segmentation == "vad":
        for track in plan.tracks:
            track.speakers = [track.name] * len(track.bounds)
    return plan


def _diarize(plan: Plan, options: dict, device: str) -> None:
    """Each track's segments cut at speaker changes; speakers S1, S2, ... in order of first speech."""
    from emotionq.inference import speakers

    found = []
    for k, track in enumerate(plan.tracks):
        turns = speakers.diarize(track.samples, track.bounds, speakers=options["speakers"],
                                 max_speakers=options.get("max_speakers", 10), device=device)
        track.bounds = turns.bounds
        found.append(turns.speakers)
    firsts = sorted({(next(a for (a, _), w in zip(t.bounds, who) if w == i), k, i)
                     for k, (t, who) in enumerate(zip(plan.tracks, found)) for i in set(who)})
    names = {(k, i): f"S{n + 1}" for n, (_, k, i) in enumerate(firsts)}
    for k, (track, who) in enumerate(zip(plan.tracks, found)):
        track.speakers = [names[k, i] for i in who]


def model_options(options: dict, track: Track, plan: Plan, family: str = registry.EMOTION2VEC) -> dict:
    """``predict_batch``'s options for one track: the run's options ``family`` takes, and the track's
    segments as windows."""
    out = {k: options[k] for k in registry.FAMILIES[family].options if k in options}
    if not plan.unchanged:
        out["bounds"] = track.bounds
    return out


def merge(result: dict, other: dict) -> dict:
    """The emotion model's result for a track with the keys another family's result gives each window."""
    for window, extra in zip(result["timeline"], other["timeline"]):
        window.update({k: v for k, v in extra.items() if k not in SEGMENT_KEYS})
    return result


def combine(plan: Plan, results: list[dict], *, model: dict, duration_s: float,
            extra_models: dict[str, dict] | None = None) -> dict:
    """The run's output from the model's result for each of ``plan.scored()``, in order (``extra_models``:
    the other families that added to the segments, and what they are)."""
    if plan.unchanged:
        return results[0]
    by_name = {t.name: r for t, r in zip(plan.scored(), results)}
    segments, channels = [], []
    for track in plan.tracks:
        result = by_name.get(track.name)
        found = [_segment(track.name, w) for w in (result or {}).get("timeline", [])]
        for segment, speaker in zip(found, track.speakers):
            segment["speaker"] = speaker
        segments.extend(found)
        channels.append(_channel(track.name, found, result))
    segments.sort(key=lambda s: (s["start"], s["channel"]))
    out = _weighted(segments)
    out.update(segments=segments, channels=channels, no_speech=not segments, segmentation=plan.segmentation,
               speech_s=round(sum(s["end"] - s["start"] for s in segments), 3),
               timeline=[{"start": s["start"], "end": s["end"], "scores": s["scores"], "top_label": s["label"]}
                         for s in segments], duration_s=duration_s, frame_rate=_frame_rate(results), model=model)
    if extra_models:
        out["models"] = extra_models
    embeddings = [(r["embedding"], sum(s["end"] - s["start"] for s in c["segments_of"]))
                  for c, r in _pairs(channels, by_name) if "embedding" in r]
    if embeddings:
        total = sum(w for _, w in embeddings)
        out["embedding"] = (sum(np.asarray(e, np.float64) * w for e, w in embeddings) / total).tolist()
    for channel in channels:
        channel.pop("segments_of")
    if segments and "speaker" in segments[0]:
        out["speakers"] = conversation.speakers(segments)
        if any("text" in s for s in segments):  # each speaker's transcript, in time order (transcript=true)
            for speaker in out["speakers"]:
                speaker["transcript"] = " ".join(s["text"] for s in segments
                                                 if s["speaker"] == speaker["name"] and s["text"])
        out["conversation"] = conversation.metrics(segments, by="speaker" if plan.diarized else "channel",
                                                   duration_s=duration_s)
    elif plan.diarized or (not plan.mixed and plan.segmentation == "vad"):  # asked for, but nobody spoke
        out["speakers"], out["conversation"] = [], None
    return out


def _segment(channel: str, window: dict) -> dict:
    label = window["top_label"]
    return {"channel": channel, "start": window["start"], "end": window["end"],  # sample / 16000: exact
            "label": label, "score": window["scores"][label], "scores": window["scores"],
            **{k: v for k, v in window.items() if k not in SEGMENT_KEYS}}  # text, language, events, emotion_tag


def _channel(name: str, segments: list[dict], result: dict | None) -> dict:
    weighted = _weighted(segments)
    channel = {"name": name, "scores": weighted["scores"], "top_label": weighted["top_label"],
               "no_speech": not segments, "summary": summarize(segments), "segments_of": segments}
    if any("text" in s for s in segments):  # the channel's transcript, in time order
        channel["transcript"] = " ".join(s["text"] for s in sorted(segments, key=lambda s: s["start"]) if s["text"])
    if result is not None and "frames" in result:
        channel["frames"], channel["frame_scores"] = result["frames"], result["frame_scores"]
    return channel


def _weighted(segments: list[dict]) -> dict:
    """Speech-duration-weighted mean of the segments' scores; None scores without speech."""
    if not segments:
        return {"scores": None, "top_label": None, "top_score": None}
    weights = np.array([s["end"] - s["start"] for s in segments], np.float64)
    matrix = np.array([[s["scores"][k] for k in LABELS] for s in segments], np.float64)
    mean = weights @ matrix / weights.sum()
    return summary(mean)


def _pairs(channels: list[dict], by_name: dict) -> list[tuple[dict, dict]]:
    return [(c, by_name[c["name"]]) for c in channels if c["name"] in by_name]


def _frame_rate(results: list[dict]) -> int:
    return results[0]["frame_rate"] if results else SAMPLE_RATE // 320
