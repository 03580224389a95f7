#!/usr/bin/env bash
# End-to-end smoke test of the production shape (compose.yaml) in containers: build the images, start
# PostgreSQL, Redis, the migration, the API, WORKER_REPLICAS workers and beat; create a campaign through
# the API, send one period to CUSTOMERS customers, check that every email left exactly once (the send
# ledger and the outbox agree, no address twice), and tear everything down.
#
#   bash deploy/smoke.sh                   # podman + podman-compose (Debian's packages)
#   DELIVERY=smtp bash deploy/smoke.sh     # through SMTP to a sink container, gmail.com capped at one
#                                          # connection across the workers (deploy/smtp_sink.py)
#
# Where no image registry is reachable (LOCAL_IMAGES=1, the default) every image is built from a
# Debian base image made with debootstrap (localhost/debian-base:bookworm; built here when missing
# and debootstrap is installed) and Debian's packages (deploy/debian/*.Containerfile), and the
# Python wheels come from a local directory filled by the host's pip. With LOCAL_IMAGES=0 the images
# are Docker Hub's (python:3.11-slim, postgres:16, redis:7), as in a real deployment.
#
# Exit status: 0 passed, 1 failed, 0 with "SKIPPED: ..." on stdout when no container runtime works
# here (CI must not fail because a machine has no podman).
set -euo pipefail
cd "$(dirname "$0")/.."

CUSTOMERS=${CUSTOMERS:-300}
WORKER_REPLICAS=${WORKER_REPLICAS:-2}
API_PORT=${API_PORT:-18080}
PROJECT=${PROJECT:-mab-smoke}
LOCAL_IMAGES=${LOCAL_IMAGES:-1}
DEBIAN_BASE=${DEBIAN_BASE:-localhost/debian-base:bookworm}
STATE=${SMOKE_DIR:-$(mktemp -d /tmp/mab-smoke.XXXXXX)}
DELIVERY=${DELIVERY:-outbox}
KEEP=${KEEP:-0}  # KEEP=1 leaves the stack running for a look (tear down: podman-compose -p mab-smoke down -v)

log() { printf '\n== %s\n' "$*"; }
skip() { echo "SKIPPED: deploy/smoke.sh: $*"; exit 0; }
fail() { echo "FAILED: deploy/smoke.sh: $*" >&2; exit 1; }

# --- a container runtime that works here, or a clear skip ------------------------------------------------
command -v podman >/dev/null 2>&1 || skip "podman is not installed (apt-get install podman runc podman-compose)"
command -v podman-compose >/dev/null 2>&1 || skip "podman-compose is not installed (apt-get install podman-compose)"
command -v curl >/dev/null 2>&1 || skip "curl is not installed"
# crun, podman's default runtime, fails on hosts with cgroups v1 and a hard RLIMIT_NOFILE below podman's
# default ulimits; runc with podman's default ulimits turned off works there and everywhere else.
if [ -z "${CONTAINERS_CONF:-}" ]; then
  export CONTAINERS_CONF="$STATE/containers.conf"
  printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n' > "$CONTAINERS_CONF"
fi

if [ "$LOCAL_IMAGES" = 1 ]; then
  if ! podman image exists "$DEBIAN_BASE"; then
    command -v debootstrap >/dev/null 2>&1 || skip "no $DEBIAN_BASE image and no debootstrap to build it"
    log "building $DEBIAN_BASE with debootstrap (a few minutes, once)"
    rootfs="$STATE/rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$STATE/debootstrap.log" 2>&1 \
      || skip "debootstrap failed (see $STATE/debootstrap.log)"
    tar -C "$rootfs" -c . | podman import - "$DEBIAN_BASE" >/dev/null
    rm -rf "$rootfs"
  fi
  probe=$DEBIAN_BASE
else
  probe=docker.io/library/redis:7
  podman pull -q "$probe" >/dev/null 2>&1 || skip "no registry reachable for $probe (try LOCAL_IMAGES=1)"
fi
podman run --rm "$probe" true >"$STATE/probe.log" 2>&1 \
  || skip "podman cannot run a container here: $(tail -1 "$STATE/probe.log")"

# --- images --------------------------------------------------------------------------------------------
export APP_IMAGE=localhost/mab-campaigns:smoke
if [ "$LOCAL_IMAGES" = 1 ]; then
  log "building the base images from Debian's packages"
  for part in python:3.11 postgres:debian redis:debian; do
    name=${part%%:*}
    podman build -q --build-arg DEBIAN_BASE="$DEBIAN_BASE" -t "localhost/mab-$part" \
      -f "deploy/debian/$name.Containerfile" deploy/debian >/dev/null
  done
  export POSTGRES_IMAGE=localhost/mab-postgres:debian REDIS_IMAGE=localhost/mab-redis:debian
  log "downloading the wheels on the host (the build has no index)"
  wheels="$STATE/wheels"
  python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
    > "$STATE/requirements.txt"
  # async-timeout: redis-py needs it below Python 3.11.3, and Debian 12's python3 is 3.11.2.
  python3 -m pip download -q --only-binary=:all: -d "$wheels" -r "$STATE/requirements.txt" \
    'setuptools>=68' wheel 'async-timeout>=4.0.3' 2>&1 | grep -v '^WARNING' || true
  log "building $APP_IMAGE from the Dockerfile"
  podman build -q -t "$APP_IMAGE" --build-arg BASE_IMAGE=localhost/mab-python:3.11 \
    --build-arg PIP_INSTALL_OPTIONS="--no-index --find-links /wheels" -v "$wheels:/wheels:ro" . >/dev/null
else
  # fully qualified: podman may have no default registry for short names
  export POSTGRES_IMAGE=docker.io/library/postgres:16 REDIS_IMAGE=docker.io/library/redis:7
  log "building $APP_IMAGE from the Dockerfile (python:3.11-slim)"
  podman build -q -t "$APP_IMAGE" --build-arg BASE_IMAGE=docker.io/library/python:3.11-slim . >/dev/null
fi

# --- the stack -----------------------------------------------------------------------------------------
export POSTGRES_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
export MAB_SIGNING_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
export API_PORT WORKER_REPLICAS API_WORKERS=${API_WORKERS:-2} WORKER_CONCURRENCY=${WORKER_CONCURRENCY:-2}
export MAB_PUBLIC_BASE_URL=http://localhost:$API_PORT
# small chunks, so that the period is split among the workers
export MAB_SEND_CHUNK_SIZE=${MAB_SEND_CHUNK_SIZE:-50}
# podman-compose 1.0.3 (Debian 12) leaves an empty default, ${VAR:-}, in place as literal text: it reads a
# copy where those say ${VAR} (the same value, empty when unset). Nothing in it is relative to its
# folder once the images are built.
COMPOSE_FILE="$STATE/compose.yaml"
sed -E 's/\$\{(\w+):-\}/${\1}/g' compose.yaml > "$COMPOSE_FILE"
SINK="${PROJECT}_smtp-sink"
if [ "$DELIVERY" = smtp ]; then
  # every worker delivers to the sink; gmail.com may have one connection at a time across all of them
  export MAB_DELIVERY_BACKEND=smtp MAB_SMTP_HOST=smtp-sink MAB_SMTP_PORT=2525 MAB_SMTP_STARTTLS=false
  python3 - "$COMPOSE_FILE" <<'EOF'
import sys
path = sys.argv[1]
pacing = ('{"gmail": {"domains": ["gmail.com"], "per_minute": 0, "connections": 1}, '
          '"others": {"domains": [], "per_minute": 0, "connections": 0}}')
text = open(path).read().replace("x-mab-environment: &mab-environment\n",
                                 f"x-mab-environment: &mab-environment\n  MAB_SMTP_PACING: '{pacing}'\n", 1)
open(path, "w").write(text)
EOF
fi
compose() { podman-compose -p "$PROJECT" -f "$COMPOSE_FILE" "$@"; }

teardown() {
  status=$?
  if [ "$KEEP" = 1 ]; then
    echo "KEEP=1: the stack is still up (podman-compose -p $PROJECT down -v to remove it)"
  else
    log "tearing down"
    compose logs >"$STATE/compose.log" 2>&1 || true
    podman rm -f "$SINK" >/dev/null 2>&1 || true
    compose down -v >/dev/null 2>&1 || true
    podman volume rm -f $(podman volume ls -q --filter "label=io.podman.compose.project=$PROJECT") >/dev/null 2>&1 || true
    echo "logs of every container: $STATE/compose.log"
  fi
  exit $status
}
trap teardown EXIT

wait_healthy() {
  # podman-compose starts containers in order but does not wait for health, and podman 4.3 runs
  # healthchecks from systemd timers (none in a container or a CI job): run the check ourselves.
  for _ in $(seq 60); do
    podman healthcheck run "$1" >/dev/null 2>&1 && return 0
    sleep 2
  done
  podman logs "$1" 2>&1 | tail -20
  fail "$1 is not healthy after 2 minutes"
}

log "starting postgres and redis"
compose up -d postgres redis >"$STATE/up.log" 2>&1 || fail "compose up postgres redis (see $STATE/up.log)"
wait_healthy "${PROJECT}_postgres_1"
wait_healthy "${PROJECT}_redis_1"
log "migrating (the one-shot service)"
compose run --rm migrate migrate >"$STATE/migrate.log" 2>&1 || fail "migrate (see $STATE/migrate.log)"
# the key is the line that starts with mab_ (podman-compose adds lines of its own)
KEY=$(compose run --rm migrate create-key --role admin --name smoke 2>/dev/null | tr -d '\r' | grep -m1 '^mab_' || true)
[ -n "$KEY" ] || fail "create-key printed no key"
if [ "$DELIVERY" = smtp ]; then
  log "starting the SMTP sink"
  mkdir -p "$STATE/sink" && chmod 777 "$STATE/sink"
  podman run -d --name "$SINK" --network "${PROJECT}_default" --network-alias smtp-sink \
    -v "$STATE/sink:/sink" -v "$PWD/deploy/smtp_sink.py:/smtp_sink.py:ro" --entrypoint python "$APP_IMAGE" \
    /smtp_sink.py /sink 2525 >/dev/null
fi
log "starting the API, $WORKER_REPLICAS workers and beat"
compose up -d api worker beat >>"$STATE/up.log" 2>&1 || fail "compose up api worker beat (see $STATE/up.log)"
API=http://127.0.0.1:$API_PORT
for _ in $(seq 60); do curl -sf "$API/health" >/dev/null && break; sleep 2; done
curl -sSf "$API/health" >/dev/null || fail "the API does not answer on $API/health"
running=$(podman ps --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}' | sort)
echo "$running"
[ "$(echo "$running" | grep -c '_worker_')" = "$WORKER_REPLICAS" ] || fail "expected $WORKER_REPLICAS workers running"
echo "$running" | grep -q '_beat_1$' || fail "beat is not running"

# --- a small campaign through the API ------------------------------------------------------------------
log "a campaign to $CUSTOMERS customers, one period"
python3 - "$CUSTOMERS" > "$STATE/customers.csv" <<'EOF'
import sys
print("external_id,email,segment,first_name")
for i in range(int(sys.argv[1])):
    domain = "gmail.com" if i % 3 == 0 else "example.com"  # a third at gmail.com (capped with DELIVERY=smtp)
    print(f"smoke-{i:05d},smoke{i}@{domain},{('champions', 'hibernating')[i % 2]},Name{i}")
EOF
H=(-H "X-API-Key: $KEY")
curl -sSf "${H[@]}" -H 'Content-Type: text/csv' --data-binary @"$STATE/customers.csv" "$API/customers/csv" >/dev/null
CAMPAIGN=$(curl -sSf "${H[@]}" -H 'Content-Type: application/json' -d @docs/examples/small-campaign.json \
  "$API/campaigns" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
curl -sSf -X POST "${H[@]}" "$API/campaigns/$CAMPAIGN/start" >/dev/null
curl -sSf -X POST "${H[@]}" "$API/campaigns/$CAMPAIGN/periods" >/dev/null
status=""
for _ in $(seq 150); do
  status=$(curl -sSf "${H[@]}" "$API/campaigns/$CAMPAIGN/periods/1" |
           python3 -c 'import json, sys; p = json.load(sys.stdin); print(p["status"], p["sent"], p["total"])')
  case $status in completed*) break ;; failed*|cancelled*) fail "period 1: $status" ;; esac
  sleep 2
done
echo "period 1: $status"
case $status in completed*) ;; *) fail "period 1 did not complete in 5 minutes: $status" ;; esac

# --- every email exactly once: the ledger, the outbox, the holdout ---------------------------------------
log "checking the emails"
curl -sSf "${H[@]}" -o "$STATE/sends.csv" "$API/campaigns/$CAMPAIGN/periods/1/sends.csv"
if [ "$DELIVERY" = smtp ]; then
  outbox="$STATE/sink"  # what the SMTP server received
  echo "SMTP sessions open at once, most per recipient domain: $(cat "$outbox/sessions.json")"
  python3 -c 'import json, sys; peak = json.load(open(sys.argv[1]))["peak"]; assert peak.get("gmail.com") == 1, peak' \
    "$outbox/sessions.json" || fail "gmail.com had more than its one connection at a time"
else
  outbox=$(podman volume inspect -f '{{.Mountpoint}}' "${PROJECT}_outbox")
fi
python3 - "$STATE/sends.csv" "$outbox" "$CUSTOMERS" "$DELIVERY" <<'EOF' || fail "the emails received do not match the ledger"
import csv, email, email.policy, pathlib, sys
sends_csv, outbox, customers = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3])
rows = list(csv.DictReader(open(sends_csv)))
ids = [r["customer_external_id"] for r in rows]
assert len(ids) == len(set(ids)) == customers, f"{len(ids)} ledger rows, {len(set(ids))} customers, expected {customers}"
# the holdout ("control") gets the baseline email, the old single email the lift is read against
control = sum(r["variant"] == "control" for r in rows)
assert control and all(r["status"] == "sent" for r in rows), "every customer (the holdout too) is sent once"
mailed = {r["email"] for r in rows}
files = sorted(outbox.rglob("*.eml"))
recipients = [email.message_from_bytes(f.read_bytes(), policy=email.policy.default)["To"].addresses[0].addr_spec
              for f in files]
assert len(recipients) == len(set(recipients)), "an address got two emails"
assert set(recipients) == mailed, f"outbox {len(recipients)} vs ledger {len(mailed)}"
print(f"{customers} customers, {customers} ledger rows all sent ({control} of them the holdout's baseline email); "
      f"{len(files)} emails received ({sys.argv[4]}), one per address, the same addresses as the ledger")
EOF
for worker in $(podman ps --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}' | grep _worker_); do
  echo "$worker: $(podman logs "$worker" 2>&1 | grep -c '"message": "chunk [0-9]*: ') chunks delivered," \
       "$(podman inspect -f '{{.RestartCount}}' "$worker") restarts"
done
log "PASSED"
