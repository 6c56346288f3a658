"""The ``emotionq`` command: run the service and its workers, administer it, score files as a client.

- ``service``: run, api, worker, janitor, flower (``supervisor`` keeps their processes)
- ``admin``: purge, keys, model
- ``scoring``: submit, status

Each command's module is imported when that command runs (or help lists it), so ``emotionq submit`` works
on a client-only install (``pip install emotionq``), where the server's modules cannot be imported.
"""

from __future__ import annotations

import importlib
import logging

import click

COMMANDS = {
    "run": "service", "api": "service", "worker": "service", "janitor": "service", "flower": "service",
    "purge": "admin", "keys": "admin", "model": "admin",
    "submit": "scoring", "status": "scoring",
}


class Commands(click.Group):
    """The subcommands, each loaded from its module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        try:
            module = importlib.import_module(f"emotionq.cli.{COMMANDS[name]}")
        except ModuleNotFoundError as exc:
            if (exc.name or "emotionq").partition(".")[0] == "emotionq":
                raise
            return _needs_server(name, exc)  # a client-only install: the server's dependencies are not there
        return getattr(module, name)


def _needs_server(name: str, exc: ModuleNotFoundError) -> click.Command:
    def fail() -> None:
        raise click.ClickException(f"`emotionq {name}` is part of the server, which needs {exc.name!r} "
                                   "(not installed): pip install 'emotionq[server]'")

    return click.Command(name, callback=fail, help="(server only: pip install 'emotionq[server]')",
                         context_settings={"ignore_unknown_options": True, "allow_extra_args": True})


@click.group(cls=Commands)
@click.option("--log-level", default="INFO", show_default=True)
def main(log_level: str) -> None:
    """emotionq: speech emotion recognition as a queued service."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
