#!/usr/bin/env bash
# Smoke test of the container stack (compose.yaml): build the image, start PostgreSQL, Redis, the
# API, two workers and beat, run a small campaign through it, check the emails in the outbox, tear
# everything down. Uses podman (or docker) from Debian's packages.
#
# No image registry is needed: a base image with Debian's Python 3.11 is built with debootstrap
# from Debian's packages and imported (localhost/mab-debian-base:bookworm).
#
# Exit 0 with "skipped: <reason>" when the container runtime cannot run a container here (CI runs
# this on any machine); any other failure exits non-zero. Today it stops after building the base
# image: the stack steps are not written yet (docs/operator/deployment.md says what ran).
set -euo pipefail
cd "$(dirname "$0")/.."

runtime=""
for r in podman docker; do
  if command -v "$r" >/dev/null 2>&1; then runtime=$r; break; fi
done
skip() { echo "deploy/smoke.sh: skipped: $*"; exit 0; }
[ -n "$runtime" ] || skip "no podman or docker on PATH"

# Can this machine run a container at all (user namespaces, cgroups, rlimits, overlay)? Asked with
# the host's own root as the container's, so the answer costs no image build.
if ! out=$($runtime run --rm --rootfs / true 2>&1); then
  skip "$runtime cannot run a container here: $out"
fi

base_tag="localhost/mab-debian-base:bookworm"
if ! $runtime image exists "$base_tag" 2>/dev/null && ! $runtime image inspect "$base_tag" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null 2>&1 || skip "no image $base_tag and no debootstrap to build it"
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  echo "+ debootstrap a Debian bookworm base with Python 3.11 (a few minutes)"
  debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,passwd,ca-certificates \
      bookworm "$rootfs" >/tmp/mab-smoke-debootstrap.log 2>&1 \
      || { tail -5 /tmp/mab-smoke-debootstrap.log; exit 1; }
  rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED  # the image installs with pip, as python:3.11-slim does
  ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
  tar -C "$rootfs" -c . | $runtime import - "$base_tag" >/dev/null
fi

# Starting compose.yaml on that base, running a campaign and checking the outbox are not scripted
# yet: say so rather than pass.
skip "the container runtime works, but the stack steps (compose up, a campaign, the outbox check) are not scripted yet"
