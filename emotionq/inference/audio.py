"""Audio files in, 16 kHz mono float32 out: what emotion2vec expects.

libsndfile (soundfile) reads WAV/FLAC/OGG quickly; PyAV (FFmpeg) reads the
rest (MP3, M4A/AAC, Opus, WebM, ...). Channels are averaged and the signal is
resampled with soxr, streaming, so memory follows the output size. No torch
here: the API imports this module to probe uploads.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from emotionq.errors import AudioError, AudioTooLong

SAMPLE_RATE = 16000
MIN_SAMPLES = 400  # 25 ms at 16 kHz: the shortest input that yields one emotion2vec frame
# Float audio lives within +-1 (unnormalised integer scales reach 2**31). Far beyond that the
# model's float32 layer norm overflows: the scores come out NaN, or as those of silence.
MAX_ABS_SAMPLE = 1e10

_FORMATS_HINT = "upload a WAV/FLAC/MP3/OGG/M4A file"
_BLOCK_FRAMES = 1 << 16
_UNKNOWN_FRAMES = 1 << 62  # libsndfile's frame count when a header leaves the length open (streamed FLAC)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AudioInfo:
    """What the header says about a recording."""

    duration_s: float
    sample_rate: int
    channels: int
    format: str


def probe(path: str | os.PathLike, *, max_seconds: float | None = None) -> AudioInfo:
    """Read the header (decoding only when a container gives no duration, and then at most
    ``max_seconds``: AudioTooLong past that)."""
    info = _probe_soundfile(path)
    if info is None:
        info = _probe_av(path, max_seconds)
    if info.duration_s <= 0:
        raise AudioError(f"the recording holds no audio samples: {_FORMATS_HINT} with sound in it", code="audio_empty")
    if int(info.duration_s * SAMPLE_RATE + 0.5) < MIN_SAMPLES:  # what the resampler will give decode()
        raise _too_short(info.duration_s)
    return info


def decode(path: str | os.PathLike, *, max_seconds: float | None = None) -> np.ndarray:
    """Decode a file to 16 kHz mono float32; raise AudioTooLong past ``max_seconds``."""
    samples = _decode_soundfile(path, max_seconds)
    if samples is None:
        samples = _decode_av(path, max_seconds)
    return check_samples(samples, max_seconds=max_seconds)


def decode_channels(path: str | os.PathLike, *, max_seconds: float | None = None,
                    max_channels: int = 8) -> list[np.ndarray]:
    """Decode a file to one 16 kHz float32 array per channel (AudioError ``too_many_channels`` past
    ``max_channels``, checked from the header before decoding)."""
    info = probe(path, max_seconds=max_seconds)
    if info.channels > max_channels:
        raise too_many_channels(info.channels, max_channels)
    samples = _decode_soundfile(path, max_seconds, keep_channels=True)
    if samples is None:
        samples = _decode_av(path, max_seconds, keep_channels=True)
    if samples.ndim == 1:
        samples = samples[:, None]
    if samples.shape[1] > max_channels:
        raise too_many_channels(samples.shape[1], max_channels)
    return [check_samples(np.ascontiguousarray(samples[:, c]), max_seconds=max_seconds)
            for c in range(samples.shape[1])]


def too_many_channels(channels: int, max_channels: int) -> AudioError:
    return AudioError(f"the recording has {channels} channels; channels=separate scores at most {max_channels}: "
                      "upload it with channels=mix, or with fewer channels", code="too_many_channels")


def check_samples(samples: np.ndarray, *, max_seconds: float | None = None) -> np.ndarray:
    """Validate decoded 16 kHz mono samples: non-empty, long enough, finite."""
    if samples.size == 0:
        raise AudioError(f"the recording holds no audio samples: {_FORMATS_HINT} with sound in it", code="audio_empty")
    if samples.size < MIN_SAMPLES:
        raise _too_short(samples.size / SAMPLE_RATE)
    peak = float(np.maximum(samples.max(), -samples.min()))  # NaN if any sample is NaN; no |x| copy of it all
    if not np.isfinite(peak):
        raise AudioError(
            "the recording contains NaN or infinite samples: re-export it as 16-bit PCM WAV or FLAC and upload that",
            code="audio_not_finite",
        )
    if peak > MAX_ABS_SAMPLE:
        raise AudioError(
            f"the recording's samples reach {peak:.3g}, far beyond any audio level (float audio lies within +-1): "
            "its header probably misstates the sample format; re-export it as 16-bit PCM WAV or FLAC and upload that",
            code="audio_out_of_range",
        )
    _check_length(samples.size / SAMPLE_RATE, max_seconds)
    return samples


def _too_short(seconds: float) -> AudioError:
    return AudioError(
        f"the recording lasts {seconds * 1000:.0f} ms; at least {MIN_SAMPLES / SAMPLE_RATE * 1000:g} ms is needed: "
        "upload a longer recording",
        code="audio_too_short",
    )


def _check_length(seconds: float, max_seconds: float | None) -> None:
    if max_seconds is not None and seconds > max_seconds:
        raise AudioTooLong(
            f"the recording lasts {seconds:.1f} s, more than the {max_seconds:g} s allowed: "
            "split it into shorter files"
        )


def _undecodable(detail: str = "") -> AudioError:
    reason = f" ({detail})" if detail else ""
    return AudioError(f"the file could not be decoded as audio{reason}: {_FORMATS_HINT}", code="audio_undecodable")


class _MonoResampler:
    """Averages channels (or, with ``keep_channels``, keeps them) and resamples blocks to 16 kHz as they arrive.

    Given the length the header declares (``expected_frames``), output goes straight into one buffer
    of that size: a list of blocks concatenated at the end held the samples twice at its peak (77 MB
    for 10 minutes) and left the blocks' memory behind in the heap. Past the buffer (a header that
    understates), the rest goes to a list as before.
    """

    def __init__(self, rate: int, max_seconds: float | None, expected_frames: int | None = None,
                 channels: int = 1) -> None:
        self.rate, self.channels = rate, channels  # channels kept (1: the mix)
        shape = () if channels == 1 else (channels,)
        self.max_frames = None if max_seconds is None else max_seconds * rate
        self.frames = 0
        self.out: list[np.ndarray] = []
        self.buffer = None
        self.filled = 0
        if expected_frames and (self.max_frames is None or expected_frames <= self.max_frames):
            self.buffer = np.empty((int(expected_frames * SAMPLE_RATE / rate) + SAMPLE_RATE // 10, *shape),
                                   np.float32)
        self.stream = None
        if rate != SAMPLE_RATE:
            import soxr

            self.stream = soxr.ResampleStream(rate, SAMPLE_RATE, channels, dtype="float32", quality="HQ")

    def add(self, block: np.ndarray, *, last: bool = False) -> None:
        """``block`` is (frames, channels)."""
        self.frames += block.shape[0]
        if self.max_frames is not None and self.frames > self.max_frames:
            raise AudioTooLong(
                f"the recording lasts more than the {self.max_frames / self.rate:g} s allowed: "
                "split it into shorter files"
            )
        if self.channels > 1:
            mono = block
        else:
            mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        if self.stream is not None:
            mono = self.stream.resample_chunk(mono, last=last)
        if not mono.size:
            return
        n = mono.shape[0]
        if self.buffer is not None and not self.out and self.filled + n <= self.buffer.shape[0]:
            self.buffer[self.filled : self.filled + n] = mono
            self.filled += n
        else:
            self.out.append(mono)

    def finish(self) -> np.ndarray:
        if self.stream is not None:
            self.add(np.zeros((0, self.channels), np.float32), last=True)
        if self.buffer is not None and not self.out:
            return self.buffer[: self.filled]
        head = [self.buffer[: self.filled]] if self.buffer is not None and self.filled else []
        parts = head + self.out
        return np.concatenate(parts) if parts else np.zeros((0,) if self.channels == 1 else (0, self.channels), np.float32)


def _sf_open(path):
    import soundfile as sf

    if hasattr(path, "read"):
        path.seek(0)
    try:
        sfile = sf.SoundFile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None  # not a format libsndfile knows: let FFmpeg try
    if sfile.format == "MP3":  # libsndfile stops at its length estimate: a VBR MP3 without
        sfile.close()  # a Xing header lost 14 of its 20 s. FFmpeg decodes to the end.
        return None
    if sfile.frames == 0 and _truncated(sfile):
        sfile.close()
        raise _undecodable("the header declares audio that the file does not contain")
    return sfile


def _truncated(sfile) -> bool:
    """libsndfile logs ``(should be N)`` when a header declares more data than the file holds."""
    return "(should be" in (sfile.extra_info or "")


def _probe_soundfile(path) -> AudioInfo | None:
    sfile = _sf_open(path)
    if sfile is None:
        return None
    with sfile:
        if sfile.frames >= _UNKNOWN_FRAMES:
            return None
        return AudioInfo(
            duration_s=sfile.frames / sfile.samplerate,
            sample_rate=int(sfile.samplerate),
            channels=int(sfile.channels),
            format=sfile.format.lower(),
        )


def _decode_soundfile(path, max_seconds, *, keep_channels: bool = False) -> np.ndarray | None:
    import soundfile as sf

    sfile = _sf_open(path)
    if sfile is None:
        return None
    with sfile:
        if sfile.frames < _UNKNOWN_FRAMES:
            _check_length(sfile.frames / sfile.samplerate, max_seconds)
        if _truncated(sfile):
            log.warning("audio header declares more data than the file holds (truncated, or written as a stream)")
        expected = sfile.frames if sfile.frames < _UNKNOWN_FRAMES else None
        mixer = _MonoResampler(sfile.samplerate, max_seconds, expected,
                               channels=sfile.channels if keep_channels else 1)
        try:
            # Not SoundFile.blocks(): it yields uninitialised memory when a file holds fewer
            # frames than its header declares (a truncated MP3 gave NaNs).
            while len(block := sfile.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)):
                mixer.add(block)
        except (sf.LibsndfileError, RuntimeError):
            return None  # libsndfile opened it but cannot read it through: let FFmpeg try
        return mixer.finish()


def _av_open(path):
    import av

    if hasattr(path, "read"):  # a seekable file object (an upload probed in the object store)
        path.seek(0)
    try:
        container = av.open(path if hasattr(path, "read") else os.fspath(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise _undecodable() from exc
    if not container.streams.audio:
        container.close()
        raise _undecodable("no audio stream")
    return container


def _estimated(container) -> bool:
    """Raw MP3/ADTS streams: FFmpeg guesses their length from the first frame's bitrate."""
    return container.format.name in ("mp3", "aac")


def _av_duration(container) -> float | None:
    stream = container.streams.audio[0]
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _probe_av(path, max_seconds: float | None) -> AudioInfo:
    with _av_open(path) as container:
        stream = container.streams.audio[0]
        duration = _av_duration(container)
        rate, channels = int(stream.rate or 0), int(stream.channels or 0)
        fmt = container.format.name.split(",")[0].replace("mov", "mp4")
        if _estimated(container):  # count the packets (no decoding); keep a gapless header length
            counted = float(sum(p.duration or 0 for p in container.demux(stream)) * stream.time_base)
            if duration is None or abs(counted - duration) > 0.5:
                duration = counted
    if duration is None:  # e.g. a stream without an index: count what decodes
        duration = _decode_av(path, max_seconds).size / SAMPLE_RATE
    if rate <= 0 or channels <= 0:
        raise _undecodable("no sample rate or channel count")
    return AudioInfo(duration_s=duration, sample_rate=rate, channels=channels, format=fmt)


def _decode_av(path, max_seconds, *, keep_channels: bool = False) -> np.ndarray:
    import av

    with _av_open(path) as container:
        stream = container.streams.audio[0]
        duration = _av_duration(container)
        exact = duration is not None and not _estimated(container)
        if exact and max_seconds is not None and duration - 1.0 > max_seconds:
            _check_length(duration, max_seconds)  # with 1 s slack for rounding in headers
        resampler = av.AudioResampler(format="fltp")  # any sample format -> float planar
        mixer = None

        def new_mixer(out) -> _MonoResampler:  # with the frames the header declares, where it is not a guess
            return _MonoResampler(out.sample_rate, max_seconds, int(duration * out.sample_rate) if exact and duration
                                  else None, channels=out.to_ndarray().shape[0] if keep_channels else 1)

        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    mixer = mixer or new_mixer(out)
                    mixer.add(out.to_ndarray().T)
            for out in resampler.resample(None):
                mixer = mixer or new_mixer(out)
                mixer.add(out.to_ndarray().T)
        except av.FFmpegError as exc:
            if mixer is None:
                raise _undecodable() from exc
            log.warning("audio stream damaged after %d frames: keeping what decoded (%s)", mixer.frames, exc)
    if mixer is None:
        if duration:
            raise _undecodable("the header declares audio that the file does not contain")
        return np.zeros(0, np.float32)  # a well-formed file with nothing in it: audio_empty
    return mixer.finish()
