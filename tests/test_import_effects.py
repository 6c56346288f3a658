"""Importing emotionq does nothing but import: no directory is made and no connection opened, in either mode,
until something asks for an app, a store or a model (``emotionq.queues.make_celery`` and the like)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness import ROOT, free_port

# Runs in a fresh interpreter: records every directory made and every connection tried while importing
# the entry points and then every module of the package (``__main__`` modules run the CLI: left out).
PROBE = """
import importlib, json, pkgutil, sys
seen = []
sys.addaudithook(lambda event, args: seen.append([event, str(args[0] if event == "os.mkdir" else args[1])])
                 if event in ("os.mkdir", "socket.connect") else None)
names = ["emotionq.queues", "celeryconfig", "emotionq.tasks", "emotionq.api"]
import emotionq
names += [m.name for m in pkgutil.walk_packages(emotionq.__path__, "emotionq.") if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": len(names), "seen": seen}))
"""


@pytest.mark.parametrize("mode", ["embedded", "distributed"])
def test_importing_every_module_makes_no_directory_and_opens_no_connection(mode, tmp_path):
    var = tmp_path / "var"  # does not exist; embedded mode would make var/broker (and more) in it
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOTIONQ_")}
    env.update(PYTHONPATH=str(ROOT), EMOTIONQ_VAR_DIR=str(var))
    if mode == "distributed":
        closed = free_port()  # nothing listens there: a connection attempt would be seen, not hang
        env.update(EMOTIONQ_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{closed}//",
                   EMOTIONQ_STORE_URL=f"redis://127.0.0.1:{closed}/0", EMOTIONQ_BLOB_URL="s3://bucket/prefix",
                   EMOTIONQ_S3_ENDPOINT_URL=f"http://127.0.0.1:{closed}")
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.splitlines()[-1])
    assert report["imported"] > 50  # the walk found the package
    assert report["seen"] == []
    assert not var.exists() and list(cwd.iterdir()) == []


def test_an_app_is_made_on_demand_with_the_settings_given(tmp_path):
    """The factory (what ``celery -A emotionq`` reaches through ``emotionq.app``) configures Celery from the
    settings it is given; embedded mode's file broker gets its folders then, not before."""
    from emotionq.queues import DELIVER_TASK, INFER_TASK, make_celery
    from harness import settings

    app = make_celery(settings(var_dir=tmp_path / "var"))
    assert (tmp_path / "var" / "broker" / "control").is_dir()
    assert app.conf.broker_url == "filesystem://" and app.conf.accept_content == ["json"]
    assert app.conf.broker_transport_options["data_folder_in"] == str((tmp_path / "var" / "broker").resolve())
    assert app.conf.broker_transport_options["polling_interval"] == 0.1  # kombu's 1 s delayed every job
    app.loader.import_default_modules()  # as a worker does when it starts: emotionq.tasks joins the app
    assert {INFER_TASK, DELIVER_TASK} <= set(app.tasks)

    remote = make_celery(settings(broker_url="amqp://guest:guest@127.0.0.1:5672//", var_dir=tmp_path / "other"))
    assert remote.conf.broker_transport_options == {"confirm_publish": True}
    assert not (tmp_path / "other").exists()
