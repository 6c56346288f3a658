"""One line of the benchmark table and the table itself: no servers, no model, so that scripts/gpu-check
can print rows on a machine that has neither."""

from __future__ import annotations

import shutil
from dataclasses import dataclass


@dataclass
class Row:
    """One line of the table: ``value`` against a ``baseline`` of the same run; ratio = value / baseline."""

    bench: str
    metric: str
    value: float | None
    unit: str = ""
    baseline: float | None = None
    baseline_label: str = ""
    baseline_unit: str | None = None  # None: the same as ``unit``
    notes: str = ""
    ratio: float | None = None

    def __post_init__(self) -> None:
        if self.baseline_unit is None:
            self.baseline_unit = self.unit
        if self.ratio is None and self.value is not None and self.baseline:
            self.ratio = self.value / self.baseline


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def print_table(rows: list[Row]) -> None:
    header = ("benchmark", "figure", "baseline", "ratio", "notes")
    cells = [(f"{r.bench}: {r.metric}", fmt(r.value, r.unit),
              f"{fmt(r.baseline, r.baseline_unit)} ({r.baseline_label})" if r.baseline is not None else "-",
              f"{r.ratio:.3f}" if r.ratio is not None else "-", r.notes) for r in rows]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(c[i]) for c in [header, *cells]) for i in range(4)]
        for line in [header, *cells]:
            print("  ".join(c.ljust(w) for c, w in zip(line, widths)), line[4])
        return
    table = Table(*header, show_lines=True)
    for line in cells:
        table.add_row(*line)
    Console(width=shutil.get_terminal_size((180, 40)).columns).print(table)


def cpu() -> dict:
    """This machine's CPU model, core count and the flags that decide int8 and bf16 speed (from /proc/cpuinfo)."""
    from emotionq.inference.cpuinfo import SPEED_FLAGS
    from emotionq.inference.cpuinfo import cpu as here

    c = here()
    return {"model": c.model, "cores": c.cores, "flags": [f for f in SPEED_FLAGS if f in c.flags],
            "int8_class": c.int8_class, "text": c.text()}
