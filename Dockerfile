# syntax=docker/dockerfile:1.7
# emotionq images: `docker build --target cpu -t emotionq:cpu .` and `--target cuda -t emotionq:cuda .`
# One image runs every process (API, workers, janitor, Flower); the command picks which.
# The model is mounted at /models/emotion2vec (EMOTIONQ_MODEL), or baked in with
# `--build-arg MODEL=baked` from a directory placed at ./model in the build context.

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
ARG MODEL=mounted

# -- build: a virtual environment with pinned dependencies -----------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# DL3008 (pin apt versions) is ignored on purpose: Debian replaces exact versions with security
# updates, so pins break rebuilds; the base image tag fixes the suite, and the Python side is pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/emotionq
WORKDIR /src
COPY pyproject.toml setup.cfg README.md celeryconfig.py ./
COPY emotionq ./emotionq

FROM build AS build-cpu
RUN /opt/emotionq/bin/pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
    && /opt/emotionq/bin/pip install "/src[server]"

FROM build AS build-cuda
# The CUDA build of the same torch: it carries its CUDA libraries; the host's driver (NVIDIA
# container toolkit) does the rest. TORCH_CUDA names PyTorch's wheel index for the CUDA version.
ARG TORCH_CUDA=cu128
RUN /opt/emotionq/bin/pip install --index-url https://download.pytorch.org/whl/${TORCH_CUDA} torch==2.13.0 \
    && /opt/emotionq/bin/pip install "/src[server]"

# -- the model: none (mounted at run time) or baked in ----------------------------------------------
FROM ${PYTHON_IMAGE} AS model-mounted
RUN mkdir -p /models

FROM ${PYTHON_IMAGE} AS model-baked
COPY model /models/emotion2vec

# DL3006 (tag the image) does not apply: `model-${MODEL}` names one of the two stages above.
# hadolint ignore=DL3006
FROM model-${MODEL} AS model

# -- runtime: the environment, the model, a user that is not root ------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# libsndfile for soundfile; PyAV's wheel brings its own FFmpeg. (DL3008: as in the build stage.)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libsndfile1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --home-dir /var/lib/emotionq emotionq
ENV PATH=/opt/emotionq/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    EMOTIONQ_HOST=0.0.0.0 \
    EMOTIONQ_VAR_DIR=/var/lib/emotionq/var \
    EMOTIONQ_MODEL=/models/emotion2vec \
    EMOTIONQ_HEALTHCHECK_URL=http://127.0.0.1:8000/healthz
COPY --from=model --chown=emotionq:emotionq /models /models
WORKDIR /var/lib/emotionq
USER 10001
EXPOSE 8000
# The API answers /healthz; a worker container points EMOTIONQ_HEALTHCHECK_URL at its metrics port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['EMOTIONQ_HEALTHCHECK_URL'], timeout=4)"]
ENTRYPOINT ["emotionq"]
CMD ["api"]

FROM runtime AS cpu
COPY --from=build-cpu /opt/emotionq /opt/emotionq

FROM runtime AS cuda
COPY --from=build-cuda /opt/emotionq /opt/emotionq
ENV EMOTIONQ_DEVICES=auto
