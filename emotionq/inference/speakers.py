"""Who spoke when, within one channel: a trained speaker encoder over short windows of speech, clustered.

The encoder is resemblyzer's GE2E speaker encoder (``resemblyzer/pretrained.pt``, inside its wheel: a
3-layer LSTM over 40 mel bands, 256-d unit embeddings). Its network is restated here in a few lines and
its weights loaded from the installed wheel, found without importing the package (resemblyzer imports
``webrtcvad``, which needs ``pkg_resources``: gone from current setuptools, and unused here).

``diarize`` embeds windows of ``WINDOW_S`` every ``STEP_S`` inside each speech segment (a segment shorter
than a window, but at least ``MIN_EMBED_S``, is one window), clusters the windows (agglomerative, cosine,
average linkage: a distance threshold for ``auto`` under ``max_speakers``, or the known count), gives every
moment of speech the label of the window centred nearest to it, folds turns shorter than ``MIN_TURN_S``
into a neighbour, and cuts the segments where the speaker changes: each cut is then placed anew, within
``REFINE_S`` of where the windows put it, where the second before sounds most like the speaker before and
the second after most like the speaker after (the encoder is an LSTM: a window's embedding leans towards
its last frames, so window centres alone misplace a change by up to half a window). A shorter segment (a "yes") is too
short to found a speaker: it is embedded whole and given the speaker it sounds most like. A channel whose
speech is all too short is one speaker.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from emotionq.errors import ConfigurationError
from emotionq.inference.audio import SAMPLE_RATE

WEIGHTS_FILE = "pretrained.pt"
MEL_BANDS, HOP, N_FFT = 40, 160, 400  # resemblyzer's mel: 25 ms windows every 10 ms
WINDOW_S = 1.5  # seconds of speech per embedding
STEP_S = 0.5  # between window starts: how finely a turn change without a pause is placed
MIN_EMBED_S = 1.0  # a shorter segment founds no speaker: it joins the one it sounds most like
MIN_TURN_S = 0.75  # shorter runs of one speaker inside a segment are folded into a neighbour
REFINE_S, REFINE_STEP_S, SIDE_S = 0.75, 0.1, 1.0  # where a cut is searched for, and the audio each side
THRESHOLD = 0.35  # cosine distance under which clusters join with speakers=auto
TARGET_DBFS = -30.0  # quiet speech is raised to this level before embedding (resemblyzer's preprocessing)
BATCH = 64  # windows per forward pass


class SpeakerEncoder:
    """resemblyzer's GE2E encoder on ``device``: ``embed`` gives a unit vector per window of 16 kHz audio."""

    def __init__(self, device: str = "cpu", path: str | Path | None = None) -> None:
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lstm = nn.LSTM(MEL_BANDS, 256, 3, batch_first=True)
                self.linear = nn.Linear(256, 256)

            def forward(self, mels):
                _, (hidden, _) = self.lstm(mels)
                raw = torch.relu(self.linear(hidden[-1]))
                return raw / torch.norm(raw, dim=1, keepdim=True).clamp_min(1e-8)

        state = torch.load(str(path or weights_path()), map_location="cpu", weights_only=True)["model_state"]
        self._net = Net()
        self._net.load_state_dict({k: v for k, v in state.items() if not k.startswith("similarity")})
        self._net.eval().to(device)
        self.device = device
        self._lock = threading.Lock()

    def mel(self, samples: np.ndarray) -> np.ndarray:
        """(frames, 40) mel power spectrogram, frame k centred on sample 160 k, as resemblyzer computes it."""
        import librosa

        return librosa.feature.melspectrogram(y=samples, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP,
                                              n_mels=MEL_BANDS).astype(np.float32).T

    def embed(self, mels: list[np.ndarray]) -> np.ndarray:
        """(N, 256) unit embeddings of mel windows (equal lengths batch together)."""
        import torch

        out = np.zeros((len(mels), 256), np.float32)
        by_length: dict[int, list[int]] = {}
        for i, m in enumerate(mels):
            by_length.setdefault(m.shape[0], []).append(i)
        with self._lock, torch.inference_mode():
            for idx in by_length.values():
                for first in range(0, len(idx), BATCH):
                    part = idx[first : first + BATCH]
                    batch = torch.from_numpy(np.stack([mels[i] for i in part])).to(self.device)
                    out[part] = self._net(batch).float().cpu().numpy()
        return out


@lru_cache(maxsize=1)
def encoder(device: str = "cpu") -> SpeakerEncoder:
    """The process's speaker encoder, loaded on first use (once per worker process, on its device)."""
    return SpeakerEncoder(device)


def warm_up(device: str = "cpu") -> None:
    """Load the encoder on ``device`` and run it once (a worker does at start): ConfigurationError if the
    weights are missing."""
    noise = np.random.default_rng(0).standard_normal(SAMPLE_RATE * 2).astype(np.float32) * 0.1
    diarize(noise, [(0, noise.size)], speakers=2, device=device)


def weights_path() -> Path:
    """``pretrained.pt`` inside the installed resemblyzer wheel (found without importing the package)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError("speakers needs the resemblyzer package: pip install resemblyzer==0.1.4")
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE
    if not path.is_file():
        raise ConfigurationError(f"resemblyzer is installed without its {WEIGHTS_FILE}: reinstall resemblyzer==0.1.4")
    return path


@dataclass
class Turns:
    """A channel's speech segments re-cut where the speaker changes, and each piece's speaker index
    (0, 1, ... in order of first speech within the channel)."""

    bounds: list[tuple[int, int]]
    speakers: list[int]


def diarize(samples: np.ndarray, segments: list[tuple[int, int]], *, speakers: int | str = "auto",
            max_speakers: int = 10, device: str = "cpu") -> Turns:
    """Who speaks in each of ``segments`` (sample ranges of ``samples``, in order): ``speakers`` is the
    known count or "auto" (at most ``max_speakers``)."""
    if not segments:
        return Turns([], [])
    windows = _windows(segments)
    if speakers == 1 or len(windows) < 2:
        return Turns(list(segments), [0] * len(segments))
    enc = encoder(device)
    mel = enc.mel(_louder(samples, segments))  # once per channel; windows are slices of it

    def cut(a: int, b: int) -> np.ndarray:
        return mel[a // HOP : max(b // HOP, a // HOP + 1)]

    embeddings = enc.embed([cut(a, b) for a, b in windows])
    labels = _cluster(embeddings, speakers, max_speakers)
    centroids = np.stack([embeddings[labels == k].mean(0) for k in range(labels.max() + 1)])
    short = [(a, b) for a, b in segments if b - a < MIN_EMBED_S * SAMPLE_RATE]
    nearest = np.argmax(enc.embed([cut(a, b) for a, b in short]) @ centroids.T, axis=1) if short else []
    turns = _cut(segments, windows, labels, dict(zip(short, np.asarray(nearest).tolist())))
    return _refined(turns, cut, enc, centroids)


def _louder(samples: np.ndarray, segments: list[tuple[int, int]]) -> np.ndarray:
    """``samples`` raised (never lowered) so that their speech is at ``TARGET_DBFS``."""
    speech = np.concatenate([samples[a:b] for a, b in segments]).astype(np.float64)
    rms = float(np.sqrt(np.mean(speech**2))) if speech.size else 0.0
    if rms <= 0:
        return samples
    gain = 10 ** ((TARGET_DBFS - 20 * np.log10(rms)) / 20)
    return (samples * gain).astype(np.float32) if gain > 1 else samples


def _windows(segments: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Embedding windows inside each segment: ``WINDOW_S`` long every ``STEP_S``, the last one flush with
    the segment's end; a segment shorter than a window (but at least ``MIN_EMBED_S``) is one window."""
    size, step, least = (int(s * SAMPLE_RATE) for s in (WINDOW_S, STEP_S, MIN_EMBED_S))
    out = []
    for a, b in segments:
        if b - a < least:
            continue
        if b - a <= size:
            out.append((a, b))
            continue
        starts = list(range(a, b - size + 1, step))
        if starts[-1] + size < b:
            starts.append(b - size)
        out.extend((s, s + size) for s in starts)
    return out


def _cluster(embeddings: np.ndarray, speakers: int | str, max_speakers: int) -> np.ndarray:
    """A cluster index per embedding: the known count, or as many as the threshold finds (capped)."""
    from sklearn.cluster import AgglomerativeClustering

    n = len(embeddings)
    if speakers != "auto":
        count = min(int(speakers), n)
    else:
        found = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                        distance_threshold=THRESHOLD).fit_predict(embeddings)
        count = min(int(found.max()) + 1, max_speakers, n)
    if count <= 1:
        return np.zeros(n, int)
    return AgglomerativeClustering(n_clusters=count, metric="cosine", linkage="average").fit_predict(embeddings)


def _cut(segments: list[tuple[int, int]], windows: list[tuple[int, int]], labels: np.ndarray,
         short: dict[tuple[int, int], int]) -> Turns:
    """Each segment cut where the label of the nearest window centre changes (short runs folded away);
    ``short`` segments (no window of their own) take the label given there."""
    centres = np.array([(a + b) / 2 for a, b in windows])
    bounds, who = [], []
    for a, b in segments:
        inside = [i for i, c in enumerate(centres) if a <= c < b]
        if not inside:
            bounds.append((a, b))
            who.append(short[a, b])
            continue
        runs = [[a, None, int(labels[inside[0]])]]
        for i, j in zip(inside, inside[1:]):
            if labels[j] != runs[-1][2]:
                cut = int((centres[i] + centres[j]) / 2)
                runs[-1][1] = cut
                runs.append([cut, None, int(labels[j])])
        runs[-1][1] = b
        for start, end, label in _folded(runs):
            bounds.append((start, end))
            who.append(label)
    return Turns(bounds, who)


def _refined(turns: Turns, cut, enc: SpeakerEncoder, centroids: np.ndarray) -> Turns:
    """Every cut inside speech moved to where the audio before it sounds most like the speaker before and
    the audio after most like the speaker after; speakers renumbered in order of first speech."""
    bounds = list(turns.bounds)
    rate, side = SAMPLE_RATE, int(SIDE_S * SAMPLE_RATE)
    for k in range(1, len(bounds)):
        (a, at), (start, b) = bounds[k - 1], bounds[k]
        if at != start or turns.speakers[k - 1] == turns.speakers[k]:
            continue  # a pause between them, or one speaker
        lo, hi = max(a + rate // 2, at - int(REFINE_S * rate)), min(b - rate // 2, at + int(REFINE_S * rate))
        candidates = list(range(lo, hi + 1, int(REFINE_STEP_S * rate)))
        if not candidates:
            continue
        mels = [cut(max(a, t - side), t) for t in candidates] + [cut(t, min(b, t + side)) for t in candidates]
        sims = enc.embed(mels) @ centroids.T
        before, after = turns.speakers[k - 1], turns.speakers[k]
        n = len(candidates)
        score = sims[:n, before] - sims[:n, after] + sims[n:, after] - sims[n:, before]
        best = candidates[int(np.argmax(score))]
        bounds[k - 1], bounds[k] = (a, best), (best, b)
    return Turns(bounds, _in_order_of_speech(turns.speakers))


def _folded(runs: list[list]) -> list[tuple[int, int, int]]:
    """Runs shorter than ``MIN_TURN_S`` given to the longer neighbour, neighbours of one label joined."""
    least = MIN_TURN_S * SAMPLE_RATE
    while len(runs) > 1:
        lengths = [r[1] - r[0] for r in runs]
        k = int(np.argmin(lengths))
        if lengths[k] >= least:
            break
        if k == 0 or (k + 1 < len(runs) and lengths[k + 1] > lengths[k - 1]):
            runs[k + 1][0] = runs[k][0]
        else:
            runs[k - 1][1] = runs[k][1]
        del runs[k]
        joined = [runs[0]]
        for r in runs[1:]:
            if r[2] == joined[-1][2]:
                joined[-1][1] = r[1]
            else:
                joined.append(r)
        runs = joined
    return [(int(a), int(b), int(c)) for a, b, c in runs]


def _in_order_of_speech(labels: list[int]) -> list[int]:
    """Cluster indices renumbered 0, 1, ... in order of first appearance."""
    order: dict[int, int] = {}
    return [order.setdefault(label, len(order)) for label in labels]
