# syntax=docker/dockerfile:1
# lifecycle-webhook image. The builder stage turns the project and its dependencies into
# wheels; the final stage only installs those wheels into a venv (no compiler, no build
# tools, no network) and runs as an unprivileged numeric user on a read-only root
# filesystem. The chart mounts an emptyDir at /tmp, the only place it writes.
#
# Bump the patch version (and pin a digest where your registry allows) with the base image.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY webhook ./webhook
# Exactly the locked dependencies, each checked against its hash in requirements.lock
# (binary wheels only: nothing is compiled), then the project's own wheel.
RUN python -m pip wheel --no-cache-dir --require-hashes --only-binary=:all: \
        --wheel-dir /wheels -r requirements.lock \
    && python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && cp requirements.lock /wheels/

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    TMPDIR=/tmp \
    HOME=/tmp \
    PATH=/opt/venv/bin:$PATH
# Offline, binary-only install from the builder's wheels (compiled to .pyc now, so a
# read-only filesystem costs nothing at start-up); pip leaves the venv afterwards.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --only-binary=:all: \
        --require-hashes --find-links=/wheels -r /wheels/requirements.lock \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --no-deps \
        /wheels/lifecycle_webhook-*.whl \
    && /opt/venv/bin/pip uninstall --yes pip setuptools \
    && groupadd --system --gid 65532 nonroot \
    && useradd --system --uid 65532 --gid 65532 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin nonroot
USER 65532:65532
WORKDIR /
# 8443: admission (HTTPS); 9090: /metrics (HTTP).
EXPOSE 8443 9090
# `docker run IMAGE` serves; any other command is a subcommand of the CLI, e.g.
# `docker run -i IMAGE mutate -f - < pod.yaml` or `docker run IMAGE serve --port 9443`.
# The chart sets the full command of each container and does not rely on CMD.
ENTRYPOINT ["lifecycle-webhook"]
CMD ["serve"]
