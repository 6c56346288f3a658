"""Fixtures of the model-layer tests: a tiny untrained checkpoint, the model on it, real speech."""

from __future__ import annotations

import pytest

from audio_factory import make_speech
from emotionq.inference import EmotionModel, decode

THREADS = 2


@pytest.fixture(name="make_speech", scope="session")
def make_speech_fixture():
    """tests/audio_factory.make_speech, as a fixture."""
    return make_speech


@pytest.fixture(scope="session")
def model(tiny_model_dir):
    """The tiny model on torch (funasr's module): the path CUDA workers run, whose internals these tests hook."""
    loaded = EmotionModel.load(str(tiny_model_dir), threads=THREADS, runtime="torch")
    yield loaded
    loaded.close()


@pytest.fixture(scope="session")
def arch_dir(tmp_path_factory):
    """``arch_dir(arch)``: the untrained checkpoint of ``arch`` (base, large), written once per session and shared
    by the slow tests, whose graphs go to the session's graph cache (exported once, quantized from there)."""
    from emotionq.inference import write_checkpoint

    made = {}

    def get(arch: str):
        if arch not in made:
            made[arch] = write_checkpoint(tmp_path_factory.mktemp(f"emotion2vec_{arch}"), arch=arch, seed=0)
        return made[arch]

    return get


@pytest.fixture(scope="session")
def funasr_model(tiny_model_dir, model):
    """funasr's own AutoModel on the same checkpoint, to compare against."""
    from funasr import AutoModel

    return AutoModel(model=str(tiny_model_dir), device="cpu", disable_update=True, disable_pbar=True, ncpu=THREADS)


@pytest.fixture(scope="session")
def speech(speech_wav):
    return decode(speech_wav)


@pytest.fixture(scope="session")
def long_speech(tmp_path_factory):
    return decode(make_speech(tmp_path_factory.mktemp("speech") / "long.wav", seconds=70.0))
