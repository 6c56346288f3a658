"""The ``emotionq`` command: run the service, run workers, write model checkpoints."""

from __future__ import annotations

import logging
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


def _worker_commands() -> list[tuple[str, list[str], dict[str, str]]]:
    s = get_settings()
    inference = [(f"worker[{dev}]", *supervisor.worker_command(s, dev)) for dev in s.device_list]
    return [*inference, ("webhooks", *supervisor.webhook_worker_command(s))]


@main.command()
def run() -> None:
    """The API and one worker per device, in the foreground; Ctrl-C stops all."""
    _announce_mode()
    s = get_settings()
    click.echo(f"emotionq: API on http://{s.host}:{s.port}", err=True)
    sys.exit(supervisor.supervise([("api", supervisor.api_command(s), {}), *_worker_commands()]))


@main.command()
def api() -> None:
    """The HTTP API only."""
    _announce_mode()
    sys.exit(supervisor.supervise([("api", supervisor.api_command(get_settings()), {})]))


@main.command()
def worker() -> None:
    """One Celery worker per device (EMOTIONQ_DEVICES), each running one job at a time, and a webhook worker."""
    _announce_mode()
    sys.exit(supervisor.supervise(_worker_commands()))


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
