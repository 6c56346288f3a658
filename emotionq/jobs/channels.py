"""Which channels a run scores: ``channels=separate`` is bounded by ``EMOTIONQ_MAX_CHANNELS``, and
``channel_names`` must name each channel. Checked from the header at upload (422), and again on the decoded
audio in the worker (a failed job), since a header may misstate its channels."""

from __future__ import annotations

from emotionq.errors import InvalidRequest
from emotionq.inference.audio import too_many_channels


def check_channels(channels: int, options: dict, *, max_channels: int) -> None:
    """AudioError ``too_many_channels`` or InvalidRequest ``channel_names_mismatch`` unless ``options`` can
    score a recording of ``channels`` channels."""
    if options.get("channels") != "separate":
        return
    if channels > max_channels:
        raise too_many_channels(channels, max_channels)
    names = options.get("channel_names")
    if names and len(names) != channels:
        raise InvalidRequest(f"channel_names names {len(names)} channels, but the recording has {channels}: "
                             f"give {channels} names, or none (ch1, ch2, ...)", code="channel_names_mismatch")

