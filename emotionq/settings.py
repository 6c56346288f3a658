"""Every setting of emotionq, in one typed class read from ``EMOTIONQ_*`` variables.

Two modes follow from the URLs: *distributed* (``amqp://`` broker, ``redis://``
store) and *embedded* (no servers: a file-system broker and a SQLite store under
``var/``). Leaving both URLs unset selects embedded mode.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Priority = Literal["high", "low"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _comma_list(value: Any) -> Any:
    """A variable's ``a,b,c`` as a list (blanks dropped); a list given in code passes as it is."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _networks(value: Any) -> Any:
    """CIDRs as networks; host bits may be set (``127.0.0.1/8``), as ``ipaddress.ip_network(strict=False)``."""
    return [n if isinstance(n, Network) else ipaddress.ip_network(n, strict=False) for n in _comma_list(value)]


def _lower_list(value: Any) -> Any:
    return [item.lower() for item in _comma_list(value)]


# Lists read from one variable as comma-separated text (NoDecode: not as JSON), e.g. EMOTIONQ_DEVICES=cuda:0,cuda:1.
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_comma_list)]
LowerList = Annotated[list[str], NoDecode, BeforeValidator(_lower_list)]
Networks = Annotated[list[Network], NoDecode, BeforeValidator(_networks)]
Seconds = Annotated[tuple[float, ...], NoDecode, BeforeValidator(_comma_list)]

DEFAULT_MODEL = "iic/emotion2vec_plus_large"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMOTIONQ_", env_file=".env", extra="ignore")

    # Where things live.
    broker_url: str = Field("", description="amqp://... for RabbitMQ; empty for the embedded file broker")
    store_url: str = Field("", description="redis://... ; sqlite:///path ; empty for the embedded SQLite store")
    var_dir: Path = Field(Path("var"), description="root of embedded-mode state")
    blob_dir: Path | None = Field(None, description="content-addressed audio blobs in a local directory (one "
                                  "host, or a filesystem every host mounts); see blob_url for object storage")

    # Object storage for audio, and jobs by URL (docs: Operating, Many hosts).
    blob_url: str = Field("", description="s3://bucket/prefix: audio in an S3-compatible bucket, shared by hosts "
                          "that share nothing else; a path or file:///path: a local directory; empty: blob_dir")
    s3_endpoint_url: str = Field("", description="e.g. http://seaweedfs:8333; empty: AWS S3")
    s3_region: str = Field("us-east-1", description="the bucket's region (most S3-compatible servers ignore it)")
    s3_access_key_id: str = Field("", description="empty: boto3's usual chain (AWS_* variables, instance role)")
    s3_secret_access_key: SecretStr | None = Field(None, description="with s3_access_key_id; unset: boto3's "
                                                   "usual chain")
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto", description="auto: path-style with an endpoint URL (most S3-compatible servers), else virtual")
    s3_timeout_s: float = Field(10.0, gt=0, description="connect and read timeout of each object-store request")
    blob_part_bytes: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024, description="an upload is spooled on the "
                                 "API's disk at most this much at a time: a multipart part (S3's minimum is 5 MiB)")
    blob_cache_dir: Path | None = Field(None, description="a worker host's local cache of fetched audio; "
                                        "default $VAR_DIR/blob-cache")
    blob_cache_bytes: int = Field(10 * 1024**3, gt=0, description="the cache's size, least recently used "
                                  "evicted first")
    blob_patience_s: float = Field(20.0, ge=0, description="how long a worker retries a fetch from an object "
                                   "store that does not answer before the job is retried later (keep it below "
                                   "soft_time_limit_base)")
    blob_max_retries: int = Field(12, ge=0, description="retries of a job whose audio could not be fetched, "
                                  "with backoff (about 10 min of outage)")
    blob_retention_s: float | None = Field(None, ge=0, description="audio is kept this long after the last job "
                                           "that needed it was submitted (and always while a run needs it); "
                                           "default max(job_ttl_seconds, result_ttl_seconds)")
    audio_url_allow_networks: Networks = Field([], description="comma-separated CIDRs audio_url may reach "
                                               "although private")
    audio_url_allow_http: bool = Field(False, description="also fetch plain http:// audio_url (https:// only "
                                       "by default)")
    audio_url_hosts: LowerList = Field([], description="comma-separated host names (*.example.com) audio_url "
                                       "may name; empty: any public host")
    audio_url_s3_buckets: CommaList = Field([], description="comma-separated buckets (bucket or bucket/prefix) "
                                            "that s3:// audio_url may read, with the s3_* credentials")
    audio_url_connect_timeout_s: float = Field(5.0, gt=0, description="longest wait for an audio_url's server "
                                               "to accept the connection")
    audio_url_read_timeout_s: float = Field(15.0, gt=0, description="longest silence while fetching audio_url")
    audio_url_timeout_s: float = Field(120.0, gt=0, description="longest a whole audio_url fetch may take")
    audio_url_max_redirects: int = Field(5, ge=0, description="redirects followed while fetching audio_url, "
                                         "each hop checked like the URL itself")

    # The janitor (`emotionq janitor`; `emotionq run` starts one): one active across hosts.
    janitor_interval_s: float = Field(30.0, gt=0, description="seconds between sweeps")
    janitor_batch: int = Field(500, ge=1, description="items of each kind handled per sweep")
    janitor_delivery_grace_s: float = Field(120.0, gt=0, description="a pending webhook delivery this overdue "
                                            "is queued again (its message was lost, e.g. the broker was down)")
    janitor_orphan_scan_s: float = Field(3600.0, gt=0, description="how often the blob store is listed for "
                                         "objects nothing references (a crashed upload's leftovers)")
    janitor_orphan_grace_s: float = Field(86400.0, gt=0, description="such an object is deleted once this old")

    # The model.
    model: str = Field(DEFAULT_MODEL, description="the emotion2vec model: a hub id (ModelScope) or a local "
                       "directory with config.yaml, model.pt and tokens.txt")
    model_revision: str | None = Field(None, description="hub revision to pin (a tag or commit); ignored for local directories")
    sensevoice_model: str | None = Field(None, description="SenseVoiceSmall, which workers serve beside the "
                                         "emotion model for jobs with transcript=true: a hub id (ModelScope, e.g. "
                                         "iic/SenseVoiceSmall) or a local directory (`emotionq model init DIR "
                                         "--arch sensevoice-small`); unset: no worker serves transcripts. Set it "
                                         "on the API too: it is part of a transcript's dedup key")
    sensevoice_revision: str | None = Field(None, description="hub revision of sensevoice_model to pin")
    devices: CommaList = Field(["auto"], description="'auto' (every CUDA device, else the CPU: "
                               "emotionq.cli.supervisor.devices), 'cpu', or a comma list like 'cuda:0,cuda:1'")
    worker_device: str = Field("cpu", description="set per worker process by `emotionq worker`")
    worker_name: str = Field("", description="set per worker process by `emotionq worker`")
    worker_host: str = Field("", description="the host part of worker names (emotionq-cuda0@HOST); default the "
                             "machine's host name")
    model_load_timeout_s: float = Field(600.0, gt=0, description="longest a worker process may take to load and "
                                        "warm up the model before Celery counts it as hung")
    torch_threads: int | None = Field(None, ge=1, description="CPU threads per worker process (torch's, or "
                                      "onnxruntime's where it runs the model)")
    runtime: Literal["auto", "torch", "onnx", "onnx-int8"] = Field(
        "auto", description="what runs the model on a CPU worker: onnx (graphs exported from the checkpoint at "
        "start, on onnxruntime), torch (funasr's module), or auto: the faster of them that matches funasr at "
        "load; onnx-int8 (opt-in): those graphs quantized to int8, checked against funasr's fp32 output on "
        "speech at load (fp32 graphs run where they fail; check a trained model with `emotionq model compare`); "
        "CUDA workers always run torch under autocast")
    runtime_cache_dir: Path | None = Field(None, description="where CPU workers keep the exported onnx graphs, "
                                           "keyed by the weights and software versions; default "
                                           "~/.cache/emotionq/onnx ($XDG_CACHE_HOME/emotionq/onnx)")
    window_seconds: float = Field(30.0, gt=1, le=30, description="longest piece of audio the model scores at "
                                  "once: longer speech is cut at its quietest points, fixed windows are this long")
    batch_size: int = Field(8, ge=1, le=64, description="jobs a worker scores together when they wait for it; "
                            "1 turns batching off (it needs RabbitMQ: embedded mode never batches)")
    batch_wait_ms: float = Field(10.0, ge=0, le=1000, description="how long a worker waits for a batch to fill")
    batch_windows: int = Field(16, ge=1, description="windows (of at most window_seconds) per forward pass")
    batch_pass_s: float | None = Field(None, gt=0, description="padded seconds of audio per forward pass; "
                                       "unset: 120 on CUDA, 16 on CPU with torch (where big passes lose), "
                                       "one window a pass on onnxruntime (where padding never paid)")
    batch_max_audio_s: float = Field(120.0, gt=0, description="seconds of audio a batch may add to its first "
                                     "job, whose time limits it runs under (see the check below)")

    # Limits.
    max_upload_bytes: int = Field(100 * 1024 * 1024, gt=0, description="largest upload or audio_url body; a "
                                  "larger Content-Length is refused before reading (413)")
    max_audio_seconds: float = Field(3600.0, gt=0, description="longest recording scored; decoding stops "
                                     "there whatever the header claims (audio_too_long)")
    max_channels: int = Field(8, ge=1, le=64, description="channels a recording may have for channels=separate "
                              "(each is scored on its own, so its time limit counts every channel)")
    soft_time_limit_base: float = Field(60.0, gt=0, description="seconds a job may run, plus the per-second part")
    soft_time_limit_per_audio_second: float = Field(0.5, ge=0, description="seconds a job may run per second "
                                                    "of its audio, on top of soft_time_limit_base")
    hard_time_limit_grace: float = Field(30.0, gt=0, description="seconds between the soft and the hard limit")
    max_time_limit: float = Field(1200.0, gt=0, description="cap; keep well below RabbitMQ's consumer_timeout")
    max_retries: int = Field(3, ge=0, description="retries of transient faults (CUDA OOM, store blips)")
    max_deliveries: int = Field(3, ge=1, description="deliveries of a job whose worker died before it is failed")
    max_wait_seconds: float = Field(60.0, ge=0, description="longest 'Prefer: wait=N' honoured")
    max_queued_high: int = Field(1000, ge=1, description="high-priority jobs waiting before uploads get 429")
    max_queued_low: int = Field(10000, ge=1, description="low-priority jobs waiting before uploads get 429")
    dispatch_ahead: int = Field(0, ge=0, description="runs of each priority handed to the broker before a "
                                "worker starts them (the rest wait in the store, where priority and turns "
                                "between clients decide); 0: live workers x batch size (x 1 in embedded mode)")
    dispatch_tick_s: float = Field(1.0, gt=0, le=60, description="how often each API process dispatches and "
                                   "repairs dispatches whose publisher died, besides after every submit and claim")
    client_rate_per_s: float = Field(0.0, ge=0, description="API requests per second each client may make "
                                     "(a token bucket in the store); 0: no limit; per client: `emotionq keys limits`")
    client_burst: int = Field(100, ge=1, description="requests a client may make at once above its rate")
    client_max_waiting: int = Field(0, ge=0, description="jobs of new audio a client may have waiting; "
                                    "0: no cap beyond EMOTIONQ_MAX_QUEUED_*; per client: `emotionq keys limits`")
    client_waiting_retry_s: int = Field(10, ge=1, description="Retry-After of a client over its waiting cap")
    queue_position: bool = Field(True, description="queued jobs carry queue.position and eta_s; false saves "
                                 "their reads (benchmarks compare)")
    events_poll_s: float = Field(0.25, gt=0, le=5, description="how often a job's event stream looks at the store")
    events_ping_s: int = Field(15, ge=1, description="seconds between heartbeats (`: ping`) of an event stream")
    events_send_timeout_s: float = Field(30.0, gt=0, description="an event stream whose reader takes nothing "
                                         "for this long is closed (it may resume with Last-Event-ID)")
    store_patience_s: float = Field(120.0, ge=0, description="how long a worker waits for a store that is down")
    drain_timeout_s: float | None = Field(None, gt=0, description="how long `emotionq worker`/`run` lets workers "
                                          "finish the jobs in hand when asked to stop; unset: the longest a job may "
                                          "run (EMOTIONQ_MAX_TIME_LIMIT) plus 30 s")

    # Who may call the API.
    auth: Literal["required", "disabled"] = Field(
        "required", description="'disabled' serves every caller as one anonymous client: for local use only")

    # Webhooks.
    webhook_allow_networks: Networks = Field([], description="comma-separated CIDRs callbacks may reach despite "
                                             "being private, e.g. '127.0.0.0/8,::1/128' for local tests")
    webhook_retry_schedule: Seconds = Field((0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400),
                                            description="comma-separated seconds before each attempt; its length "
                                            "bounds the attempts")
    webhook_timeout_s: float = Field(15.0, gt=0, le=60, description="longest a delivery attempt may take; "
                                     "past it the attempt counts as failed and is retried")
    webhook_secret_grace_seconds: float = Field(24 * 3600.0, ge=0, description="old secret keeps signing this long")
    webhook_concurrency: int = Field(8, ge=1, description="deliveries in flight per webhook worker")

    # Retention.
    job_ttl_seconds: int = Field(7 * 24 * 3600, gt=0, description="how long a job is kept "
                                 "(GET /v1/jobs/{id} is 404 after)")
    result_ttl_seconds: int = Field(7 * 24 * 3600, gt=0, description="how long a result is reused for identical audio")

    # HTTP.
    host: str = Field("127.0.0.1", description="address the API (and the worker metrics and Flower) listen on; "
                      "0.0.0.0 behind a proxy")
    port: int = Field(8000, description="the API's port")
    api_workers: int = Field(1, ge=1, le=64, description="API processes (uvicorn workers) on this host, sharing "
                             "its port; their metrics are summed at /metrics")
    http_header_timeout_s: float = Field(10.0, gt=0, description="a connection must send a request's line and "
                                         "headers within this; slower ones are closed (408)")
    http_body_timeout_s: float = Field(30.0, gt=0, description="longest pause between two pieces of an upload "
                                       "before it is dropped (408)")
    http_keep_alive_s: int = Field(5, ge=1, description="idle keep-alive connections are closed after this")
    http_max_connections: int = Field(1000, ge=1, description="open connections (and requests in progress) per "
                                      "API process; past it requests are answered 503")

    # Operators: Prometheus and Flower.
    worker_metrics_port: int = Field(0, ge=0, le=65535, description="`emotionq worker` serves the Prometheus "
                                     "metrics of all its worker processes here, on EMOTIONQ_HOST; 0 = off")
    worker_metrics_dir: Path | None = Field(None, description="prometheus-client multiprocess files of the worker "
                                            "processes (emptied at start); default a fresh temporary directory")
    flower_auth: str = Field("", description="'user:password' for Flower's basic auth (`emotionq flower` "
                             "requires it), or 'disabled' for local use")
    flower_port: int = Field(5555, ge=1, le=65535, description="Flower's port (`emotionq flower`)")
    flower_broker_api: str = Field("", description="RabbitMQ management API for Flower's queue lengths; default "
                                   "http://<broker user:password@host>:15672/api/")

    @field_validator("broker_url", "store_url")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @property
    def embedded(self) -> bool:
        """True when neither server is configured: everything runs from ``var_dir``."""
        return not self.broker_url and not self.store_url

    @property
    def effective_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        return "filesystem://"

    @model_validator(mode="after")
    def _batch_fits_time_limit(self) -> Settings:
        """A batch runs under its first job's soft limit (base + rate x its audio): the audio the batch
        adds must fit the base part at the same rate, or a batch of short jobs could time out."""
        extra_s = self.batch_max_audio_s * self.soft_time_limit_per_audio_second
        if self.batch_size > 1 and extra_s > self.soft_time_limit_base:
            raise ValueError(
                f"batch_max_audio_s x soft_time_limit_per_audio_second = {extra_s:g} s exceeds "
                f"soft_time_limit_base ({self.soft_time_limit_base:g} s): lower EMOTIONQ_BATCH_MAX_AUDIO_S "
                "or raise EMOTIONQ_SOFT_TIME_LIMIT_BASE"
            )
        return self

    @property
    def effective_store_url(self) -> str:
        if self.store_url:
            return self.store_url
        return f"sqlite:///{(self.var_dir / 'emotionq.sqlite3').resolve()}"

    @property
    def effective_drain_timeout_s(self) -> float:
        return self.drain_timeout_s or self.max_time_limit + 30

    @property
    def broker_dir(self) -> Path:
        return (self.var_dir / "broker").resolve()

    @property
    def effective_blob_dir(self) -> Path:
        return (self.blob_dir or self.var_dir / "blobs").resolve()

    @property
    def effective_blob_url(self) -> str:
        return self.blob_url.strip() or str(self.effective_blob_dir)

    @property
    def effective_blob_cache_dir(self) -> Path:
        return (self.blob_cache_dir or self.var_dir / "blob-cache").resolve()

    @property
    def effective_blob_retention_s(self) -> float:
        if self.blob_retention_s is not None:
            return self.blob_retention_s
        return float(max(self.job_ttl_seconds, self.result_ttl_seconds))

    def served_models(self) -> dict[str, tuple[str, str | None]]:
        """The model families this worker serves: family -> (hub id or directory, revision)."""
        served = {"emotion2vec": (self.model, self.model_revision)}
        if self.sensevoice_model:
            served["sensevoice"] = (self.sensevoice_model, self.sensevoice_revision)
        return served

    def max_queued(self, priority: Priority) -> int:
        return self.max_queued_high if priority == "high" else self.max_queued_low

    def time_limits(self, duration_s: float) -> tuple[float, float]:
        """(soft, hard) seconds for one job, scaled to the length of its audio."""
        soft = self.soft_time_limit_base + self.soft_time_limit_per_audio_second * duration_s
        soft = min(soft, self.max_time_limit - self.hard_time_limit_grace)
        return soft, soft + self.hard_time_limit_grace


@lru_cache
def get_settings() -> Settings:
    return Settings()
