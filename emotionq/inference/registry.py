"""Which model families a run needs, and which of its options each one takes.

A worker serves the families configured for it (``emotionq.worker.runtime.ModelHolder``) and says so in
its readiness; the API refuses a run that needs a family no live worker serves; the dispatcher routes a
run to the queue of the families it needs (``emotionq.queues.queue_for``); the worker runs every family the
run needs on the same decoded audio and segments. Light: the API imports it (no numpy, no torch).

Adding a family: its class in ``contract.FAMILIES``, its entry here (the run options it takes, and which
runs want it), its setting in ``emotionq.settings`` (``Settings.served_models``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

EMOTION2VEC = "emotion2vec"
SENSEVOICE = "sensevoice"


@dataclass(frozen=True)
class Served:
    """What the worker needs to know of a family besides its class."""

    options: tuple[str, ...]  # the run options its predict_batch takes (besides the segments' bounds)
    wanted: Callable[[dict], bool]  # whether a run with these options needs it
    role: str  # what it answers, for /v1/models


FAMILIES: dict[str, Served] = {
    EMOTION2VEC: Served(("granularity", "embedding"), lambda options: True, "emotion"),
    SENSEVOICE: Served(("language", "itn"), lambda options: bool(options.get("transcript")),
                       "transcript, language, audio events, emotion tag"),
}


def needed(options: dict) -> list[str]:
    """The families a run with ``options`` needs, in ``FAMILIES`` order (emotion2vec first: its result is
    the run's, the others add keys to its segments)."""
    return [name for name, served in FAMILIES.items() if served.wanted(options or {})]
