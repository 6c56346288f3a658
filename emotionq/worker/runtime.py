"""What one worker process holds (settings, store, blobs, webhooks, the model) and its heartbeat.

``WorkerProcess`` owns the process's ``Runtime``: made anew in each pool child after the fork
(``start``: connections, then the model, loaded and warmed up, then readiness), retired at its
shutdown (``stop``). Connections are opened on first use; the model (``ModelHolder``) is loaded
only by ``start``, in a pool child. The heartbeat tells ``/readyz`` that the model answers.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from functools import cached_property

import httpx

from emotionq import jobs, metrics, queues
from emotionq.blobs import BlobStore, open_blobs
from emotionq.errors import EmotionQError, StoreUnavailable
from emotionq.inference.contract import Model, family
from emotionq.inference.registry import EMOTION2VEC
from emotionq.jobs.scheduler import dispatch, readiness
from emotionq.settings import Settings, get_settings
from emotionq.store import PatientStore, open_store
from emotionq.webhooks import delivery
from emotionq.webhooks.events import Notifier
from emotionq.worker.batching import Gatherer

log = logging.getLogger(__name__)


class ModelHolder:
    """The models of a worker process (``Settings.served_models``: the emotion model, and SenseVoice where
    configured), each loaded once through the model contract, after the fork, and warmed up before any is
    handed out."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._models: dict[str, Model] = {}

    @property
    def models(self) -> dict[str, Model]:
        """The models by family, loaded on first use (ConfigurationError if one cannot be)."""
        if not self._models:
            from emotionq.inference import segments, speakers

            s = self._settings
            loaded: dict[str, Model] = {}
            for name, (model_id, revision) in s.served_models().items():
                model = family(name).load(model_id, revision=revision, device=s.worker_device,
                                          threads=s.torch_threads, runtime=s.runtime,
                                          runtime_cache_dir=s.runtime_cache_dir)
                i = model.info()
                log.info("%s model %s ready on %s (%s, %s: %s; untrained=%s)", name, i.id, i.device, i.dtype,
                         i.runtime, i.runtime_note, i.untrained)
                loaded[name] = model
            segments.warm_up()  # the speech detector and librosa, loaded before the first job
            speakers.warm_up(s.worker_device)  # the speaker encoder, on the model's device
            self._models = loaded
        return self._models

    @property
    def model(self) -> Model:
        """The emotion model."""
        return self.models[EMOTION2VEC]

    @property
    def loaded(self) -> bool:
        return bool(self._models)

    def close(self) -> None:
        for model in self._models.values():
            model.close()
        self._models = {}


class Runtime:
    """One worker process's connections and model (made anew in each pool child, after the fork)."""

    def __init__(self) -> None:
        self.settings = get_settings()
        self.name = self.settings.worker_name or f"{self.settings.worker_device}@{socket.gethostname()}"
        self.models = ModelHolder(self.settings)
        self._heartbeat: threading.Timer | None = None

    @cached_property
    def store(self) -> PatientStore:
        return PatientStore(open_store(self.settings.effective_store_url), patience_s=self.settings.store_patience_s)

    @cached_property
    def blobs(self) -> BlobStore:
        return open_blobs(self.settings, worker=True)  # fetches through this host's bounded cache

    @cached_property
    def notifier(self) -> Notifier:
        return Notifier(store=self.store, celery=queues.celery_app(), settings=self.settings)

    @cached_property
    def webhook_policy(self) -> delivery.Policy:
        return delivery.Policy.from_settings(self.settings)

    @cached_property
    def http(self) -> httpx.Client:
        return httpx.Client(follow_redirects=False, trust_env=False)

    def dispatch(self) -> None:
        """Refill the broker from the backlogs after claims (a failure waits for the API's tick)."""
        try:
            dispatch.dispatch(self.store.inner, queues.celery_app(), self.settings)
        except EmotionQError as exc:
            log.warning("could not dispatch after a claim: %s", exc)

    def notify(self, run: jobs.Run, event: str) -> None:
        """Queue webhook events; a failure here must not undo the recorded outcome."""
        try:
            self.notifier.run_event(run, event)
        except Exception:  # broker or store down: the deliveries stay pending in the store
            log.exception("run %s: could not queue %s webhooks", run.id, event)

    @cached_property
    def gatherer(self) -> Gatherer | None:
        """Takes more waiting jobs for a batch; None where batching is off."""
        url = self.settings.effective_broker_url
        return Gatherer(url, self.settings) if Gatherer.enabled_for(url, self.settings) else None

    @property
    def model(self) -> Model:
        return self.models.model

    def announce(self) -> None:
        """Tell /readyz this process has its models answering (loading them first); repeat while alive.
        ``models`` lists every family it serves (what ``GET /v1/models`` and the API's checks read)."""
        models = self.models.models
        m = models[EMOTION2VEC].info()
        served = [{"name": name, "id": i.id, "revision": i.revision, "device": i.device, "dtype": i.dtype,
                   "runtime": i.runtime, "untrained": i.untrained}
                  for name, i in ((name, model.info()) for name, model in models.items())]
        try:
            readiness.announce(self.store.inner, name=self.name, info={
                "device": m.device, "dtype": m.dtype, "model": m.id, "untrained": m.untrained,
                "runtime": m.runtime, "runtime_note": m.runtime_note, "pid": os.getpid(), "models": served})
        except StoreUnavailable as exc:
            log.warning("could not announce readiness: %s", exc)
        self._heartbeat = threading.Timer(readiness.HEARTBEAT_S, self.announce)
        self._heartbeat.daemon = True
        self._heartbeat.start()

    def observe_gpu_memory(self) -> None:
        metrics.observe_gpu_memory(worker=self.name, device=self.settings.worker_device)

    def retire(self) -> None:
        """Stop the heartbeat and leave /readyz's list at once (else it notices after a while)."""
        if self._heartbeat is None:
            return
        self._heartbeat.cancel()
        try:
            readiness.retire(self.store.inner, name=self.name)
        except StoreUnavailable as exc:
            log.warning("could not retire from readiness (it expires by itself): %s", exc)


class WorkerProcess:
    """This process's ``Runtime``: ``start`` makes it anew in a pool child after the fork (never the parent's
    connections), loads the model and announces readiness once it answered; elsewhere (the main process, the
    webhook worker's threads) ``runtime`` makes one on first use, which loads no model unless a task asks."""

    def __init__(self) -> None:
        self._runtime: Runtime | None = None
        self._lock = threading.Lock()

    @property
    def runtime(self) -> Runtime:
        with self._lock:
            if self._runtime is None:
                self._runtime = Runtime()
            return self._runtime

    @property
    def current(self) -> Runtime | None:
        """The runtime if one was made (started, or made on first use); None: nothing to observe or retire."""
        return self._runtime

    def start(self) -> Runtime:
        """After the fork: new connections, the model loaded and warmed up, then readiness announced."""
        with self._lock:
            self._runtime = Runtime()
        self._runtime.announce()  # loads and warms up the model first
        self._runtime.observe_gpu_memory()
        return self._runtime

    def stop(self) -> None:
        """At the pool child's shutdown: leave /readyz's list."""
        if self._runtime is not None:
            self._runtime.retire()
