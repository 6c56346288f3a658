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


CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def cpu() -> dict:
    """This machine's CPU model, core count and the flags that decide int8 and bf16 speed (from /proc/cpuinfo)."""
    import os
    from pathlib import Path

    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    present = [f for f in CPU_FLAGS if f in flags]
    vnni = "with VNNI" if {"avx512_vnni", "avx_vnni"} & flags else "AVX2-only" if "avx2" in flags else "no AVX2"
    return {"model": model, "cores": os.cpu_count(), "flags": present, "int8_class": vnni,
            "text": f"{model}, {os.cpu_count()} cores, {' '.join(present) or 'none of ' + ' '.join(CPU_FLAGS)} ({vnni})"}
