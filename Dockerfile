# One image for both processes: `factq api` (the default) and `factq worker`.
#
#   docker build -t factq .
#   docker run --rm -p 8000:8000 -e FACTQ_REDIS_URL=... -e FACTQ_AMQP_URL=... factq
#   docker run --rm -e FACTQ_REDIS_URL=... -e FACTQ_AMQP_URL=... factq worker
#
# With the embed task (PyTorch's CPU build from its own wheel index; a plain
# `torch` from PyPI on amd64 is a CUDA build of several GB):
#   docker build --build-arg EXTRAS=embed \
#     --build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu -t factq:embed .
#   docker run ... factq:embed worker --tasks embed
#
# Settings come from FACTQ_* environment variables (see factq/settings.py).
# No HEALTHCHECK here: the worker shares this image and serves no HTTP, so the
# API's health check lives in compose.yaml (GET /readyz on the api service).

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: resolve and install everything into a self-contained venv ----
FROM ${PYTHON_IMAGE} AS builder

# Optional extras to install, comma-separated (`embed`); and where pip may
# find wheels besides PyPI (PyTorch's CPU index, for the embed extra).
ARG EXTRAS=""
ARG PIP_EXTRA_INDEX_URL=""

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# No compiler or libgmp-dev: gmpy2 (and uvicorn[standard]'s uvloop, httptools,
# watchfiles) ship manylinux wheels for CPython 3.11 on amd64 and arm64.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --upgrade pip

WORKDIR /src
# README.md* is a glob so the build works whether or not the README exists
# (pyproject.toml names it; a missing one is only a setuptools warning).
COPY pyproject.toml README.md* ./
COPY src ./src
# Smoke test: the entry point runs, gmpy2 came as a working wheel, and the
# Lua scripts (package data) were installed.
RUN /opt/venv/bin/pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}" \
    && /opt/venv/bin/factq --help > /dev/null \
    && /opt/venv/bin/python -c "import gmpy2, importlib.resources as r; \
assert r.files('factq').joinpath('lua/prelude.lua').is_file()"

# ---- runtime: the venv, a non-root user, nothing else ----
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="factq" \
      org.opencontainers.image.description="Slow computations behind a queue: FastAPI, RabbitMQ and Redis." \
      org.opencontainers.image.licenses="MIT"

RUN groupadd --system --gid 10001 factq \
    && useradd --system --uid 10001 --gid factq --create-home \
       --home-dir /home/factq --shell /usr/sbin/nologin factq

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Numeric, so Kubernetes' runAsNonRoot can verify it; it is the `factq` user.
USER 10001:10001
WORKDIR /home/factq

EXPOSE 8000

# Both processes stop cleanly on SIGTERM (uvicorn drains requests; the worker
# finishes held jobs within FACTQ_SHUTDOWN_GRACE_S, default 30 s): give
# `docker stop` / compose a timeout above that grace (compose uses 40 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["factq"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
