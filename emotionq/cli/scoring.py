"""``emotionq submit`` and ``status``: the commands that call the API as a client."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

import click

DEFAULT_URL = "http://{host}:{port}"  # the API on this host: EMOTIONQ_HOST (127.0.0.1) and EMOTIONQ_PORT (8000)


def _api_options(command):
    """--url and --key, for the commands that call the API as a client (read from the environment, not from the
    server's settings: a client-only install has no pydantic-settings)."""
    command = click.option("--key", envvar="EMOTIONQ_API_KEY", show_envvar=True,
                           help="The API key (`emotionq keys create CLIENT` makes one)")(command)
    return click.option("--url", envvar="EMOTIONQ_API_URL", show_envvar=True,
                        help="The API  [default: http://EMOTIONQ_HOST:EMOTIONQ_PORT, else "
                        "http://127.0.0.1:8000]")(command)


def _client(url: str | None, key: str | None):
    from emotionq.client import Client

    logging.getLogger("httpx").setLevel(logging.WARNING)  # no log line per request
    url = url or DEFAULT_URL.format(host=os.environ.get("EMOTIONQ_HOST", "127.0.0.1"),
                                    port=os.environ.get("EMOTIONQ_PORT", "8000"))
    return Client(url, key or None)


@click.command()
@click.argument("paths", metavar="FILE|DIR...", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--priority", type=click.Choice(["high", "low"]), default="low", show_default=True)
@click.option("--wait", is_flag=True, help="Wait for each result (without it: the job ids and their status).")
@click.option("--timeout", type=click.FloatRange(min=0), default=600, show_default=True,
              help="Seconds --wait waits for each job.")
@click.option("--concurrency", "-j", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Files in flight at once.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the results to this file  [default: stdout]")
@click.option("--segmentation", type=click.Choice(["vad", "fixed"]), help="Speech segments (the API's default) "
              "or fixed windows.")
@click.option("--channels", type=click.Choice(["mix", "separate"]), help="Score each channel on its own.")
@click.option("--channel-names", help="Names of the channels, comma-separated (with --channels separate).")
@click.option("--speakers", help="Who spoke: auto, or the known count 1-10 (speech segments only).")
@click.option("--max-speakers", type=click.IntRange(2, 10), help="At most this many speakers (with --speakers auto).")
@click.option("--segments", "segments_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write one row per speech segment to this .csv or .jsonl file (implies --wait).")
@click.option("--transcript", is_flag=True, help="Also what was said (SenseVoice): text, language and events "
              "per segment in --segments.")
@click.option("--language", type=click.Choice(["auto", "zh", "en", "yue", "ja", "ko"]),
              help="The spoken language (with --transcript; default auto).")
@click.option("--itn", is_flag=True, help="Numbers as digits and punctuation in the transcript (with --transcript).")
@_api_options
def submit(paths: tuple[Path, ...], priority: str, wait: bool, timeout: float, concurrency: int, fmt: str,
           output: Path | None, segmentation: str | None, channels: str | None, channel_names: str | None,
           speakers: str | None, max_speakers: int | None, segments_path: Path | None, transcript: bool,
           language: str | None, itn: bool, url: str | None,
           key: str | None) -> None:
    """Score each FILE and every audio file under each DIR: one result per file, as they finish.

    Run it again on the same folder to resume: files already scored come back at once from the
    API's cache (dedup: cache). A file the API refuses is reported with its error code; the rest
    go on. Exits 1 if any file failed.
    """
    from tqdm import tqdm

    from emotionq.client import submit as bulk
    from emotionq.errors import APIError

    files = bulk.audio_files(paths)
    if not files:
        raise click.UsageError("no audio files found (looked for " + " ".join(sorted(bulk.AUDIO_SUFFIXES)) + ")")
    seg_fmt = _segments_format(segments_path)
    options = {k: v for k, v in (("segmentation", segmentation), ("channels", channels),
                                 ("channel_names", channel_names), ("speakers", speakers),
                                 ("max_speakers", max_speakers and str(max_speakers)),
                                 ("transcript", transcript and "true"), ("language", language),
                                 ("itn", itn and "true")) if v}
    failed = 0
    with (open(output, "w", encoding="utf-8") if output else contextlib.nullcontext(sys.stdout)) as out, \
            (open(segments_path, "w", encoding="utf-8") if segments_path else contextlib.nullcontext()) as seg_out, \
            _client(url, key) as client, tqdm(total=len(files), unit="file", disable=None) as bar:
        if fmt == "csv":
            tqdm.write(bulk.csv_header(), file=out)
        if seg_fmt == "csv":
            print(bulk.csv_header(bulk.SEGMENT_COLUMNS + (bulk.TRANSCRIPT_COLUMNS if transcript else ())),
                  file=seg_out)
        try:
            for result in bulk.score(client, files, priority=priority, wait=wait or bool(segments_path),
                                      timeout=timeout, concurrency=concurrency, options=options):
                tqdm.write(bulk.format_row(result, fmt), file=out)  # above the bar, not through it
                out.flush()
                if seg_out is not None:
                    seg_out.writelines(bulk.format_segment(s, seg_fmt, transcript=transcript) + "\n"
                                       for s in result["segments"])
                failed += result["error"] is not None
                bar.update()
                bar.set_postfix(failed=failed, refresh=False)
        except APIError as exc:
            raise click.ClickException(str(exc)) from exc
    if failed:
        click.echo(f"emotionq: {failed} of {len(files)} files failed", err=True)
        sys.exit(1)


def _segments_format(path: Path | None) -> str | None:
    if path is None:
        return None
    if path.suffix.lower() not in (".csv", ".jsonl"):
        raise click.BadParameter("name a .csv or a .jsonl file", param_hint="--segments")
    return path.suffix.lower().lstrip(".")


@click.command()
@click.argument("job_id")
@_api_options
def status(job_id: str, url: str | None, key: str | None) -> None:
    """Print the job JOB_ID as JSON."""
    import json

    from emotionq.errors import APIError

    with _client(url, key) as client:
        try:
            job = client.job(job_id)
        except APIError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(job, indent=2))

