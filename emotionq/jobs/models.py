"""What jobs need of the models: the families a run's options need, whether live workers serve them, and
what the cluster serves (``GET /v1/models``), from the workers' readiness.

The web layer reaches the model registry (``emotionq.inference.registry``) and SenseVoice's languages only
through here.
"""

from __future__ import annotations

from emotionq.errors import InvalidRequest
from emotionq.inference import registry
from emotionq.inference.sensevoice_tokens import LANGUAGES
from emotionq.jobs.scheduler import readiness
from emotionq.settings import Settings
from emotionq.store import Store

__all__ = ["LANGUAGES", "check_served", "extra_models_key", "served_models"]


def check_served(store: Store, options: dict) -> None:
    """InvalidRequest ``model_unavailable`` where the run needs a model family no live worker serves (a
    transcript without SenseVoice): such a job would wait for ever."""
    needed = registry.needed(options)
    if needed == [registry.EMOTION2VEC]:
        return
    served = readiness.served(store)
    missing = [name for name in needed if name not in served]
    if missing:
        raise InvalidRequest(f"this job needs {', '.join(missing)} (transcript=true), and no live worker serves it: "
                             "start a worker with EMOTIONQ_SENSEVOICE_MODEL set (GET /v1/models lists what is "
                             "served)", code="model_unavailable")


def extra_models_key(settings: Settings, options: dict) -> str:
    """What the dedup key adds for the other families a run needs (SenseVoice's id and revision, as the API's
    settings name it), so that changing that model does not reuse transcripts of the old one."""
    if registry.SENSEVOICE not in registry.needed(options):
        return ""
    return f"+sensevoice:{settings.sensevoice_model or 'default'}@{settings.sensevoice_revision or 'default'}"


def served_models(store: Store) -> list[dict]:
    """One entry per family and loaded model (id, revision, runtime, device) with how many live workers serve it."""
    out: dict[tuple, dict] = {}
    for name, loaded in readiness.served(store).items():
        for m in loaded:
            key = (name, m.get("id"), m.get("revision"), m.get("runtime"), m.get("device"))
            entry = out.setdefault(key, {
                "name": name, "role": registry.FAMILIES[name].role if name in registry.FAMILIES else name,
                "id": str(m.get("id")), "revision": m.get("revision"), "runtime": m.get("runtime"),
                "device": m.get("device"), "untrained": m.get("untrained"), "workers": 0})
            entry["workers"] += 1
    return list(out.values())
