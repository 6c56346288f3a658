"""Private RabbitMQ, Redis and SeaweedFS (S3) servers for fault-injection and many-host tests.

The machine's own RabbitMQ (``rabbit@localhost`` on 5672) and Redis (6379) are shared by the other
tests and must never be stopped. A test that needs a server in a special state (AOF on, stopped,
restarted, crashed) starts its own instance here, on free ports with its own directories, and
closes it afterwards::

    with PrivateRedis(tmp_path) as redis, PrivateRabbitMQ(tmp_path) as rabbit:
        ...                                   # point the service at redis.url / rabbit.url
        rabbit.restart(kill=True, down_s=2)   # crash the broker, keep it down 2 s, bring it back

Each server runs as a child in its own session, so ``stop(kill=True)`` SIGKILLs the whole process
group (a real crash), and ``restart`` brings the server back on the same port with the same data,
so durable state survives. The module needs nothing but the standard library.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")  # /usr/sbin/rabbitmq* would su to the rabbitmq user


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and lies below the kernel's ephemeral range, so no
    outgoing connection can take it while a server boots or is down for a restart (with bind(0)
    ports that happened: RabbitMQ failed to start with eaddrinuse)."""
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = random.randrange(10000, ephemeral_low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def _answers(port: int, send: bytes, start: bytes, contains: bytes) -> bool:
    """Whether 127.0.0.1:port answers `send` with a reply that starts with `start` and contains
    `contains` (something only our own server says, in case a stranger holds the port)."""
    reply = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(send)
            while contains not in reply and (chunk := s.recv(65536)):
                reply += chunk
    except OSError:
        return False
    return reply.startswith(start) and contains in reply


def _group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` is still running (zombies do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, pgrp = stat.read_text().rpartition(")")[2].split()[:3]
        except OSError:
            continue
        if int(pgrp) == pgid and state not in "ZX":
            return True
    return False


class _Server:
    """A server process in its own session: start, stop (clean or SIGKILL), restart, close."""

    name: str
    start_timeout: float
    stop_timeout: float

    def __init__(self, workdir: Path, port: int) -> None:
        self.port = port
        self.dir = Path(workdir) / f"{self.name}-{port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / f"{self.name}.log"
        self._proc: subprocess.Popen | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        return None

    def _ready(self) -> bool:
        raise NotImplementedError

    @staticmethod
    def _alive(proc: subprocess.Popen) -> bool:
        # Never reaps the leader: until `stop` reaps it, its pid, which is also the process group
        # id, cannot be reused, so signalling the group can never hit a stranger.
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._alive(self._proc)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> None:
        """Start the server and wait until it answers; on failure it is killed and the log tail raised."""
        if self.running:
            raise RuntimeError(f"{self.name} on port {self.port} is already running")
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(self._command(), cwd=self.dir, env=self._env(), stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while not self._ready():
            if not self.running or time.monotonic() > deadline:
                problem = "did not answer in time" if self.running else "exited"
                self.stop(kill=True)
                raise RuntimeError(f"{self.name} on port {self.port} {problem}; log tail:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server: SIGKILL its whole process group (a crash), or SIGTERM it for a clean
        shutdown (SIGKILL after `stop_timeout`). Returns once every process of the group is gone."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if kill:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while _group_alive(proc.pid):
            if not self._alive(proc) or time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)  # the leader is gone or late: sweep what is left
            time.sleep(0.02)
        proc.wait()

    def restart(self, *, kill: bool = True, down_s: float = 0) -> None:
        """Stop (a crash unless kill=False, see `stop`), stay down `down_s` seconds, and start
        again on the same port and data."""
        self.stop(kill=kill)
        time.sleep(down_s)
        self.start()

    def close(self) -> None:
        """Stop for good (SIGKILL: the data is thrown away anyway). Idempotent."""
        self.stop(kill=True)

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PrivateRedis(_Server):
    """A redis-server on a free port with its own dir; durable by default
    (appendonly yes, appendfsync always, no RDB snapshots), so acknowledged writes survive a SIGKILL."""

    name = "redis"
    start_timeout = 20
    stop_timeout = 20

    def __init__(self, workdir: Path, *, aof: bool = True) -> None:
        super().__init__(workdir, free_port())
        self.aof = aof
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        return ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--appendonly", "yes" if self.aof else "no", "--appendfsync", "always", "--save", "",
                "--daemonize", "no", "--logfile", ""]

    def _ready(self) -> bool:
        # PING says -LOADING while the AOF is replayed; INFO names the server's pid.
        pid = f"process_id:{self._proc.pid}\r\n".encode()
        return _answers(self.port, b"PING\r\nINFO server\r\n", b"+PONG", pid)


class PrivateRabbitMQ(_Server):
    """A RabbitMQ node of its own: own node name, AMQP and distribution ports, Erlang cookie (its own
    HOME), data and log dirs, no plugins. guest/guest works on 127.0.0.1. `restart` is a real node
    restart on the same data dir: durable queues and persistent messages survive it."""

    name = "rabbitmq"
    start_timeout = 60
    stop_timeout = 30

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, free_port())
        self.dist_port = free_port()
        while self.dist_port == self.port:
            self.dist_port = free_port()
        self.node = f"emq-{secrets.token_hex(4)}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        home = self.dir / "home"
        home.mkdir(exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(16).upper())
            cookie.chmod(0o400)
        (self.dir / "rabbitmq-env.conf").write_text("")  # keeps /etc/rabbitmq/rabbitmq-env.conf out
        (self.dir / "enabled_plugins").write_text("[].\n")
        self._environ = {
            **os.environ,
            "HOME": str(home),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            # No config file (nor /etc/rabbitmq/*): everything comes from these variables, and the
            # node boots about a second faster without parsing a rabbitmq.conf.
            "RABBITMQ_CONFIG_FILE": str(self.dir / "none.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "none.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbitmq.pid"),
        }

    def _command(self) -> list[str]:
        return [str(RABBITMQ_BIN / "rabbitmq-server")]

    def _env(self) -> dict[str, str]:
        return self._environ

    def _ready(self) -> bool:
        # Once the node has booted and opened its listener, an AMQP 0-9-1 protocol header is
        # answered by a Connection.Start method frame (type 1) whose cluster_name is
        # "<our node's name>@<host name>".
        name = self.node.partition("@")[0].encode() + b"@"
        return _answers(self.port, b"AMQP\x00\x00\x09\x01", b"\x01", name)

    def restart(self, *, kill: bool = False, down_s: float = 0) -> None:
        """A real node restart, clean unless `kill`; see `_Server.restart`."""
        super().restart(kill=kill, down_s=down_s)

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run `rabbitmqctl -n NODE ARGS...` against this node (about 1 s each: the CLI boots Erlang)."""
        return subprocess.run([str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, *args], env=self._environ,
                              capture_output=True, text=True, timeout=timeout)

    def queue_depth(self, queue: str) -> int | None:
        """Messages ready + unacknowledged in `queue` (vhost /), or None if there is no such queue."""
        out = self.ctl("-q", "list_queues", "name", "messages", "--formatter", "json")
        if out.returncode:
            raise RuntimeError(f"rabbitmqctl list_queues failed: {out.stderr or out.stdout}")
        return next((q["messages"] for q in json.loads(out.stdout) if q["name"] == queue), None)


class PrivateSeaweedFS(_Server):
    """SeaweedFS's all-in-one `weed mini` (master, volume, filer, S3 gateway) on free ports, with its data
    in its own dir and the buckets ``buckets`` made at start; ``url`` is the S3 endpoint. `restart` keeps
    the data. Its admin server, WebDAV, Iceberg and Lance ports are off or on free ports too, its sockets
    in its dir, and its telemetry off (it would call out)."""

    name = "seaweedfs"
    start_timeout = 60
    stop_timeout = 20
    ACCESS_KEY, SECRET_KEY, REGION = "emotionq", "emotionq-secret", "us-east-1"

    def __init__(self, workdir: Path, *, buckets: tuple[str, ...] = ("emotionq",)) -> None:
        super().__init__(workdir, free_port())
        self.buckets = buckets
        self.url = f"http://127.0.0.1:{self.port}"
        ports = {self.port}
        while len(ports) < 10:
            ports.add(free_port())
        self._ports = sorted(ports - {self.port})

    def _command(self) -> list[str]:
        import shutil
        import sys

        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, admin, admin_grpc, s3_grpc = self._ports
        data = self.dir / "data"
        data.mkdir(exist_ok=True)
        return [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-s3.port={self.port}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.telemetry=false",
                "-master.volumeSizeLimitMB=64",
                f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
                f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
                f"-filer.localSocket={self.dir / 'filer.sock'}", f"-s3.localSocket={self.dir / 's3.sock'}",
                f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}",
                "-admin.ui=false", "-webdav=false", f"-bucket={','.join(self.buckets)}"]

    def _env(self) -> dict[str, str]:
        # weed mini makes these the credentials of its admin identity.
        return {**os.environ, "AWS_ACCESS_KEY_ID": self.ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY}

    def _ready(self) -> bool:
        try:
            self.client().head_bucket(Bucket=self.buckets[0])
        except Exception:  # noqa: BLE001 - not up yet
            return False
        return True

    def client(self):
        """A boto3 client of its S3 gateway, with a short timeout (it is used to poll while booting)."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.url, region_name=self.REGION, aws_access_key_id=self.ACCESS_KEY,
                            aws_secret_access_key=self.SECRET_KEY,
                            config=Config(s3={"addressing_style": "path"}, connect_timeout=1, read_timeout=5,
                                          retries={"max_attempts": 1}))

    def settings(self, bucket: str | None = None, prefix: str = "audio/") -> dict[str, str]:
        """emotionq's settings (by name) for blobs in ``bucket`` under ``prefix``."""
        return {"blob_url": f"s3://{bucket or self.buckets[0]}/{prefix}", "s3_endpoint_url": self.url,
                "s3_access_key_id": self.ACCESS_KEY, "s3_secret_access_key": self.SECRET_KEY,
                "s3_region": self.REGION}

    def keys(self, bucket: str | None = None, prefix: str = "") -> list[str]:
        """Every object key in ``bucket`` under ``prefix``."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket or self.buckets[0],
                                                                        Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]
