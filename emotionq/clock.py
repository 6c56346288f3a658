"""Timestamps as the API shows them: ISO 8601 in UTC with a Z."""

from __future__ import annotations

from datetime import datetime, timezone


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z") if ts else None
