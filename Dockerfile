# syntax=docker/dockerfile:1
# One image for every Linli service: `docker run IMAGE linli.<service> [serve|migrate|...]`.
# Decisions in docs/adr/0024-kubernetes-deployment.md.

# The same interpreter in both stages: the venv's python is a symlink to /usr/local/bin.
# Pin by digest as well in CI (python:3.11.14-slim-trixie@sha256:...) once a registry answers.
ARG PYTHON_IMAGE=python:3.11.14-slim-trixie

FROM ${PYTHON_IMAGE} AS builder
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /uvx /bin/
# Bytecode compiled here, so nothing writes __pycache__ under a read-only root at run time;
# copy mode because the cache mount is another filesystem; never a downloaded Python.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src

# Dependencies first, from the lock alone: this layer changes only with uv.lock.
# The five services by name (not --all-packages): the workspace's devstack member would
# bring the embedded PostgreSQL and nats-server binaries, which production never runs.
COPY pyproject.toml uv.lock ./
COPY libs/cloudevents-nats/pyproject.toml libs/cloudevents-nats/
COPY libs/contracts/pyproject.toml libs/contracts/
COPY libs/servicekit/pyproject.toml libs/servicekit/
COPY libs/devstack/pyproject.toml libs/devstack/
COPY services/intake/pyproject.toml services/intake/
COPY services/partners/pyproject.toml services/partners/
COPY services/scheduling/pyproject.toml services/scheduling/
COPY services/notifications/pyproject.toml services/notifications/
COPY services/console/pyproject.toml services/console/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --no-install-workspace \
        --package linli-intake --package linli-partners \
        --package linli-scheduling --package linli-notifications --package linli-console

# Then the workspace's own packages, installed into the venv (not editable: /src stays here).
COPY libs libs
COPY services services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable \
        --package linli-intake --package linli-partners \
        --package linli-scheduling --package linli-notifications --package linli-console


FROM ${PYTHON_IMAGE}
# No uv, no compiler, no sources: the venv only, owned by root and read-only to the service.
COPY --from=builder /app/.venv /app/.venv
# HOME=/tmp: the user has no passwd entry, and anything that looks for a home directory
# finds the one writable place (an emptyDir in Kubernetes).
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /app
USER 10001:10001
EXPOSE 8000 9464
ENTRYPOINT ["python", "-m"]
# Which service runs is the caller's choice (the manifests always say); alone, the image
# prints intake's usage rather than start something nobody asked for.
CMD ["linli.intake", "--help"]
