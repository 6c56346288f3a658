"""``python -m benchmarks [--only NAME ...] [--quick]``: run, print the table, write the JSON."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

from benchmarks import (
    batching,
    events,
    gpu,
    memory,
    objects,
    pipeline,
    priority,
    runtime,
    segments,
    speakers,
    transcripts,
    uploads,
    waiting,
)
from benchmarks.common import Context, Row, print_table, write_results

BENCHMARKS = {**{m.NAME: m.run for m in (pipeline, runtime, batching, segments, speakers, transcripts, uploads, objects,
                                         priority, waiting)},
              waiting.SCALE_NAME: waiting.run_scale, **{m.NAME: m.run for m in (events, memory, gpu)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--only", nargs="+", action="extend", choices=list(BENCHMARKS), metavar="NAME",
                        help=f"run only these: {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run")
    args = parser.parse_args(argv)

    ctx = Context(quick=args.quick)
    rows: list[Row] = []
    errors: dict[str, str] = {}
    started = time.time()
    ctx.details["loadavg_1m_start"] = os.getloadavg()[0]  # others' work on this machine skews every figure
    for name in args.only or BENCHMARKS:
        print(f"benchmarks: {name} ...", file=sys.stderr, flush=True)
        began = time.monotonic()
        try:
            rows += BENCHMARKS[name](ctx)
        except Exception as exc:  # noqa: BLE001 - report it, run the others
            traceback.print_exc()
            errors[name] = f"{type(exc).__name__}: {exc}"
            rows.append(Row(name, "failed", None, notes=errors[name][:300]))
        ctx.detail(name)["elapsed_s"] = round(time.monotonic() - began, 1)
        print(f"benchmarks: {name} took {ctx.detail(name)['elapsed_s']:.0f} s", file=sys.stderr, flush=True)
    print_table(rows)
    path = write_results(rows, ctx, started=started, errors=errors)
    print(f"total {time.time() - started:.0f} s; load average {ctx.details['loadavg_1m_start']:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} cores); "
          f"results in {path.relative_to(path.parents[2])}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
