# syntax=docker/dockerfile:1.7
#
# The notification service (services/notification, Python 3.11, grpcio asyncio): its own image,
# since it shares no build with the Rust binaries (images/Dockerfile). `make images` builds it
# with the others (the Makefile's IMAGES names this file):
#
#   docker build -f images/notification.Dockerfile -t bookmesh/notification:dev .
#
# The build context is the repository's root, narrowed by notification.Dockerfile.dockerignore
# to what this image needs: the service's package and lock file, the contracts (proto/) its stubs
# are generated from and the generator, and the authorization policy it reads (policy/).
#
# Multi-platform builds (PLATFORMS=linux/amd64,linux/arm64) need nothing more: every
# dependency in the lock file ships wheels for both, so nothing compiles.

ARG PYTHON_VERSION=3.11.11
ARG DEBIAN_RELEASE=bookworm

# --- builder: the virtual environment from the lock file, and the stubs from proto/ ------------
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
# Exactly the versions the service is tested with (requirements.lock, a full `pip freeze`).
COPY services/notification/requirements.lock /src/requirements.lock
RUN --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    python -m venv /opt/venv \
 && /opt/venv/bin/pip install -r /src/requirements.lock
# The stubs, by the generator the service's own scripts use (prepare.sh runs
# clients/python/generate.sh): grpcio-tools' bundled protoc over every contract in proto/, and
# an __init__.py in every generated folder (the authorization policy walks the `bookmesh`
# package for the methods of every contract). Then what only the build and the tests need
# leaves the runtime's environment: grpcio-tools, pytest and what only pytest pulls in (pip
# skips a name the lock file does not have).
COPY proto/ /src/proto/
COPY clients/python/generate.sh /src/clients/python/generate.sh
RUN PYTHON=/opt/venv/bin/python /src/clients/python/generate.sh /app/generated \
 && /opt/venv/bin/pip uninstall --yes grpcio-tools pytest pytest-asyncio iniconfig pluggy pygments
# The package where config.py expects it: the repository's layout, so its default policy path
# (<root>/policy/authorization.toml) is /app/policy/authorization.toml here too.
COPY services/notification/bookmesh_notification/ /app/services/notification/bookmesh_notification/
COPY policy/authorization.toml /app/policy/authorization.toml
# Bytecode compiled here, checked by nothing at import (the files never change in the image): the
# runtime's root filesystem is read-only, Python could not cache it there.
RUN /opt/venv/bin/python -m compileall -q --invalidation-mode unchecked-hash /app \
 && mkdir -p /data

# --- runtime: Python, the venv, the stubs, the package and the policy; uid 65532 ---------------
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS runtime
LABEL org.opencontainers.image.source="https://github.com/bookmesh/bookmesh" \
      org.opencontainers.image.title="bookmesh notification" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
# The data directory (SQLite, when BOOKMESH_NOTIFICATION_STORE is not `redis`) belongs to the
# runtime user, so `docker run` works without a volume; in Kubernetes the notices are in Redis
# and nothing is written here.
COPY --from=builder --chown=65532:65532 /data /var/lib/bookmesh
# The same unprivileged uid as the Rust images (distroless `nonroot`); it needs no passwd entry.
USER 65532:65532
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app/generated:/app/services/notification \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BOOKMESH_AUTHZ_POLICY=/app/policy/authorization.toml \
    BOOKMESH_DATA_DIR=/var/lib/bookmesh \
    BOOKMESH_LOG_FORMAT=json
EXPOSE 50055 9090
# The Deployment (k8s/base/notification) runs the same command.
ENTRYPOINT ["/opt/venv/bin/python", "-m", "bookmesh_notification"]
