"""The ``emotionq`` command: run the service, run workers, write model checkpoints."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

import click

from emotionq import supervisor
from emotionq.settings import get_settings


@click.group()
@click.option("--log-level", default="INFO", show_default=True)
def main(log_level: str) -> None:
    """emotionq: speech emotion recognition as a queued service."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _announce_mode() -> None:
    s = get_settings()
    if s.embedded:
        click.echo(f"emotionq: EMBEDDED mode (no servers): file broker in {s.broker_dir}, "
                   f"SQLite store {s.effective_store_url}; set EMOTIONQ_BROKER_URL and EMOTIONQ_STORE_URL "
                   "for RabbitMQ + Redis", err=True)
    else:
        click.echo(f"emotionq: DISTRIBUTED mode: broker {s.effective_broker_url.split('@')[-1]}, "
                   f"store {s.effective_store_url.split('@')[-1]}", err=True)
    if s.auth == "disabled":
        click.echo("emotionq: API keys are NOT required (EMOTIONQ_AUTH=disabled): every caller is one "
                   "anonymous client; for local use only", err=True)
    click.echo(f"emotionq: model {s.model} (revision {s.model_revision or 'hub default'}), "
               f"devices {', '.join(s.device_list)}, blobs in {s.effective_blob_dir}", err=True)


def _worker_commands(extra_env: dict[str, str]) -> list[tuple[str, list[str], dict[str, str]]]:
    s = get_settings()
    inference = [(f"worker[{dev}]", *supervisor.worker_command(s, dev)) for dev in s.device_list]
    return [(name, cmd, {**env, **extra_env})
            for name, cmd, env in [*inference, ("webhooks", *supervisor.webhook_worker_command(s))]]


def _supervise_with_workers(*others: tuple[str, list[str], dict[str, str]]) -> None:
    """Supervise ``others`` and the workers, serving the workers' metrics meanwhile; exits with their code."""
    from emotionq import metrics
    from emotionq.errors import ConfigurationError

    s = get_settings()
    with contextlib.ExitStack() as stack:
        try:
            env = stack.enter_context(metrics.worker_exporter(s))
        except ConfigurationError as exc:
            raise click.ClickException(exc.message) from exc
        code = supervisor.supervise([*others, *_worker_commands(env)])
    sys.exit(code)


@main.command()
def run() -> None:
    """The API and one worker per device, in the foreground; Ctrl-C stops all."""
    _announce_mode()
    s = get_settings()
    click.echo(f"emotionq: API on http://{s.host}:{s.port}", err=True)
    _supervise_with_workers(("api", supervisor.api_command(s), {}))


@main.command()
def api() -> None:
    """The HTTP API only."""
    _announce_mode()
    sys.exit(supervisor.supervise([("api", supervisor.api_command(get_settings()), {})]))


@main.command()
def worker() -> None:
    """One Celery worker per device (EMOTIONQ_DEVICES), each running one job at a time, and a webhook worker."""
    _announce_mode()
    _supervise_with_workers()


@main.command()
def flower() -> None:
    """Flower, Celery's web monitor, on EMOTIONQ_HOST:EMOTIONQ_FLOWER_PORT, behind basic auth.

    EMOTIONQ_FLOWER_AUTH=user:password is required; EMOTIONQ_FLOWER_AUTH=disabled opens it to anyone
    who can reach the port (local use only).
    """
    s = get_settings()
    env = dict(os.environ)
    user, _, password = s.flower_auth.partition(":")
    if s.flower_auth == "disabled":
        click.echo(f"emotionq: Flower has NO authentication (EMOTIONQ_FLOWER_AUTH=disabled): anyone who reaches "
                   f"{s.host}:{s.flower_port} sees every task and can shut workers down; for local use only",
                   err=True)
        env["FLOWER_UNAUTHENTICATED_API"] = "true"  # else Flower's HTTP API answers only 401
    elif user and password and "," not in s.flower_auth:
        env["FLOWER_BASIC_AUTH"] = s.flower_auth  # in the environment: `ps` shows arguments to everyone
    else:
        raise click.ClickException("set EMOTIONQ_FLOWER_AUTH=user:password (no comma) for Flower's basic auth, "
                                   "or EMOTIONQ_FLOWER_AUTH=disabled for local use without any")
    if s.flower_broker_api:
        env["FLOWER_BROKER_API"] = s.flower_broker_api
    click.echo(f"emotionq: Flower on http://{s.host}:{s.flower_port}, broker "
               f"{s.effective_broker_url.split('@')[-1]}", err=True)
    argv = [sys.executable, "-m", "celery", "-A", "emotionq", "flower", f"--port={s.flower_port}",
            f"--address={s.host}"]
    os.execve(sys.executable, argv, env)


@main.command()
@click.option("--priority", type=click.Choice(["high", "low"]), required=True)
def purge(priority: str) -> None:
    """Remove the jobs waiting at one priority from the queue and fail them (code `purged`, webhooks sent).

    Both priorities share one queue, so `celery purge` cannot tell them apart, and would leave the
    jobs of the messages it drops queued for ever. Run it once per priority to empty the queue.
    """
    from emotionq.celery_app import app as celery
    from emotionq.purge import purge_priority
    from emotionq.webhooks.events import Notifier

    def action(store):
        notifier = Notifier(store=store, celery=celery, settings=get_settings())
        return purge_priority(celery, store, priority=priority, notify=notifier.run_event)

    result = _run_admin(action)
    click.echo(f"purged {len(result.failed)} {priority}-priority runs (their jobs failed with code 'purged'); "
               f"dropped {result.stale} stale messages; left {result.kept} other messages queued")


@main.group()
def keys() -> None:
    """API keys (stored hashed in the job store; a key is shown once, when created)."""


@keys.command("create")
@click.argument("client")
def keys_create(client: str) -> None:
    """A new key for CLIENT (a name such as 'acme'); a client's keys all see its jobs."""
    from emotionq import auth

    key, record = _run_admin(lambda store: auth.create(store, client=client))
    click.echo(f"created key {record['id']} for client {client!r}; it is shown only now:", err=True)
    click.echo(key)


@keys.command("list")
def keys_list() -> None:
    """Every key's id, client and creation time."""
    from emotionq import auth
    from emotionq.clock import iso

    for entry in _run_admin(auth.list_keys):
        click.echo(f"{entry['id']}  {entry['client']}  created {iso(entry['created_at'])}")


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke the key KEY_ID (see `keys list`); it stops working at once."""
    from emotionq import auth

    entry = _run_admin(lambda store: auth.revoke(store, key_id=key_id))
    click.echo(f"revoked key {key_id} of client {entry['client']!r}")


def _run_admin(action):
    """Run ``action(store)``; emotionq's own errors become a one-line message and exit code 1."""
    from emotionq.errors import EmotionQError
    from emotionq.store import open_store

    try:
        store = open_store(get_settings().effective_store_url)
        try:
            return action(store)
        finally:
            store.close()
    except EmotionQError as exc:
        raise click.ClickException(exc.message) from exc


def _api_options(command):
    """--url and --key, for the commands that call the API as a client."""
    command = click.option("--key", help="The API key  [default: EMOTIONQ_API_KEY]")(command)
    return click.option("--url", help="The API  [default: EMOTIONQ_API_URL, else http://EMOTIONQ_HOST:PORT]")(command)


def _client(url: str | None, key: str | None):
    from emotionq.client import Client

    s = get_settings()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no log line per request
    return Client(url or s.effective_api_url, key or (s.api_key.get_secret_value() if s.api_key else None))


@main.command()
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
@_api_options
def submit(paths: tuple[Path, ...], priority: str, wait: bool, timeout: float, concurrency: int, fmt: str,
           output: Path | None, url: str | None, key: str | None) -> None:
    """Score each FILE and every audio file under each DIR: one result per file, as they finish.

    Run it again on the same folder to resume: files already scored come back at once from the
    API's cache (dedup: cache). A file the API refuses is reported with its error code; the rest
    go on. Exits 1 if any file failed.
    """
    from tqdm import tqdm

    from emotionq import bulk
    from emotionq.errors import APIError

    files = bulk.audio_files(paths)
    if not files:
        raise click.UsageError("no audio files found (looked for " + " ".join(sorted(bulk.AUDIO_SUFFIXES)) + ")")
    failed = 0
    with (open(output, "w", encoding="utf-8") if output else contextlib.nullcontext(sys.stdout)) as out, \
            _client(url, key) as client, tqdm(total=len(files), unit="file", disable=None) as bar:
        if fmt == "csv":
            tqdm.write(bulk.csv_header(), file=out)
        try:
            for result in bulk.score(client, files, priority=priority, wait=wait, timeout=timeout,
                                      concurrency=concurrency):
                tqdm.write(bulk.format_row(result, fmt), file=out)  # above the bar, not through it
                out.flush()
                failed += result["error"] is not None
                bar.update()
                bar.set_postfix(failed=failed, refresh=False)
        except APIError as exc:
            raise click.ClickException(str(exc)) from exc
    if failed:
        click.echo(f"emotionq: {failed} of {len(files)} files failed", err=True)
        sys.exit(1)


@main.command()
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


@main.group()
def model() -> None:
    """Model checkpoints."""


@model.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--arch", type=click.Choice(["tiny", "base", "large"]), default="tiny", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def model_init(directory: Path, arch: str, seed: int) -> None:
    """Write a randomly initialised emotion2vec checkpoint that funasr loads from DIRECTORY.

    Its scores mean nothing (jobs say untrained: true); it exercises the real code.
    """
    from emotionq.inference.checkpoint import write_checkpoint

    path = write_checkpoint(directory, arch=arch, seed=seed)
    click.echo(f"wrote an untrained {arch} emotion2vec checkpoint to {path}")


if __name__ == "__main__":
    main()
