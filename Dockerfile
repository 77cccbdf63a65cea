# The `dallosh` command in a container: the image of the worker-pipeline and sink
# services of docker-compose.yml (`docker compose build`), usable for any subcommand but
# `train` (the base install: no torch; the local model runs from its ONNX export;
# Dockerfile.train is the training image):
#   docker run --rm dallosh-stream:local worker --role sink
# Pinned (not a floating tag) so that a rebuild gets the same base; bump deliberately.
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package build needs is copied (no .venv, .git or local data dirs reach
# the image, with or without a .dockerignore): README.md (pyproject.toml's long
# description) and every top-level package that pyproject.toml lists, `bench` included.
# tests/test_docker_compose.py builds the wheel from exactly these COPY lines.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY stream_app ./stream_app
COPY connectors ./connectors
COPY schemas ./schemas
COPY bench ./bench
RUN pip install . \
    && cd / && rm -rf /src

# Unprivileged user; DALLOSH_DATA_DIR (Faust state, logs) must be writable by it.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/dallosh dallosh \
    && mkdir -p /var/lib/dallosh \
    && chown dallosh:dallosh /var/lib/dallosh
USER dallosh
WORKDIR /home/dallosh
ENV DALLOSH_DATA_DIR=/var/lib/dallosh

# Prometheus /metrics (DALLOSH_METRICS_PORT).
EXPOSE 9108

ENTRYPOINT ["dallosh"]
CMD ["--help"]
