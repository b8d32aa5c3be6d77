#!/usr/bin/env bash
# make container-test: build the image with podman and run it for real, then the compose file.
#
# 1. The base image (python:3.11-slim): pulled where a registry answers, otherwise made locally
#    by deploy/local-base.sh; redis:7-alpine likewise, or a stand-in from deploy/redis-standin.
# 2. podman build of the unmodified Dockerfile, tagged pneumoscan:latest.
# 3. The service and a worker started from it against a throwaway redis-server: /readyz,
#    /predict on a fixture, the API-key refusal, and a folder job through the queue.
# 4. docker-compose.yml under podman-compose, with the same checks, and a chest radiograph sent
#    to its DICOM node by C-STORE and scored by its worker.
# Everything it started (containers, networks, volumes, Redis, temporary folders) is removed at
# the end; the images stay as the next run's cache. Needs root, podman, runc, podman-compose,
# redis-server, curl, dcmtk's storescu, the project's .venv (make install; it writes the DICOM
# test file), and debootstrap where no registry answers.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "container-test: $*" >&2; }
fail() {
    echo "container-test: FAILED: $*" >&2
    for container in $(podman ps -a --filter "name=$project" --format '{{.Names}}' 2>/dev/null); do
        echo "--- last lines of $container:" >&2
        podman logs --tail 30 "$container" >&2 2>&1 || true
    done
    exit 1
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

for tool in podman runc podman-compose redis-server curl python3 storescu; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (apt-get install podman runc podman-compose redis-server curl dcmtk debootstrap)"
done
[ -x .venv/bin/python ] || fail "no .venv here: run make install first"

work="$(mktemp -d /var/tmp/pneumoscan-ct.XXXXXX)"
project="pneumoscan-ct-$$"
key="container-test-key-$$"
redis_pid=""
compose=(podman-compose -p "$project" -f docker-compose.yml)

# Containers may ask for no more open files than this process's hard limit, nor more processes
# than the kernel allows here; crun refuses hybrid cgroup set-ups that runc accepts.
cat > "$work/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]

[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF="$work/containers.conf"

cleanup() {
    status=$?
    podman rm -f "$project-service" "$project-worker" >/dev/null 2>&1 || true
    PNEUMOSCAN_API_KEY="$key" "${compose[@]}" down -v >/dev/null 2>&1 || true
    podman network rm -f "${project}_default" >/dev/null 2>&1 || true
    podman volume rm -f "${project}_jobs" "${project}_redis-data" "${project}_var" >/dev/null 2>&1 || true
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
    rm -rf "$work"
    if [ "$status" -eq 0 ]; then say "passed"; fi
}
trap cleanup EXIT

# --- 1. base images -------------------------------------------------------------------------
image_or() {  # image_or IMAGE COMMAND...: pull IMAGE, or make it with COMMAND
    local image="$1"; shift
    if podman image exists "$image"; then return; fi
    if timeout 60 podman pull -q "docker.io/library/$image" >/dev/null 2>&1; then
        podman tag "docker.io/library/$image" "$image"
        return
    fi
    say "no registry has $image; making it locally"
    "$@"
}
image_or python:3.11-slim deploy/local-base.sh python:3.11-slim
image_or redis:7-alpine podman build --network host -q -t redis:7-alpine deploy/redis-standin

# --- 2. the image ---------------------------------------------------------------------------
say "building pneumoscan:latest"
podman build --network host -q -t pneumoscan:latest . >/dev/null || fail "podman build"

# --- 3. service and worker from the image ---------------------------------------------------
mkdir -p "$work/input" "$work/jobs"
cp tests/fixtures/xrays/*/*.jpeg "$work/input/"
inputs=$(ls "$work/input" | wc -l)
chown 10001 "$work/jobs"  # the image's user writes the job folders
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$work/redis.log" 2>&1 &
redis_pid=$!

check_service() {  # check_service URL: readiness, a prediction, the key, a folder job
    local url="$1" deadline=$((SECONDS + 240)) body job state
    until curl -sf "$url/readyz" >/dev/null; do
        [ $SECONDS -lt $deadline ] || fail "$url/readyz never answered 200"
        sleep 2
    done
    body=$(curl -sf -H "Authorization: Bearer $key" -H "Content-Type: image/jpeg" \
        --data-binary @"$(ls tests/fixtures/xrays/PNEUMONIA/*.jpeg | head -1)" "$url/predict") \
        || fail "/predict on a fixture"
    python3 -c 'import json, sys; r = json.loads(sys.argv[1]); assert r["label"] in ("NORMAL", "PNEUMONIA") and 0 <= r["probability"] <= 1, r' "$body" \
        || fail "/predict answered $body"
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Content-Type: image/jpeg" --data-binary @/dev/null "$url/predict")" = 401 ] \
        || fail "/predict without the API key was not refused with 401"
    job=$(curl -sf -H "Authorization: Bearer $key" -H "Content-Type: application/json" \
        -d '{"folder": "/data/input"}' "$url/jobs" | python3 -c 'import json, sys; print(json.load(sys.stdin)["job_id"])') \
        || fail "POST /jobs"
    deadline=$((SECONDS + 240))
    while :; do
        state=$(curl -sf -H "Authorization: Bearer $key" "$url/jobs/$job" | python3 -c 'import json, sys; print(json.load(sys.stdin)["state"])') \
            || fail "GET /jobs/$job"
        [ "$state" = done ] && break
        [ "$state" != failed ] || fail "job $job failed"
        [ $SECONDS -lt $deadline ] || fail "job $job still $state after 240 s"
        sleep 2
    done
    rows=$(curl -sf -H "Authorization: Bearer $key" "$url/jobs/$job/results" | tail -n +2 | grep -c ',ok,') \
        || fail "GET /jobs/$job/results"
    [ "$rows" -eq "$inputs" ] || fail "job $job scored $rows of $inputs files"
    say "$url: ready, /predict answered, 401 without the key, job $job scored $rows files"
}

port=$(free_port)
common=(--network host -e PNEUMOSCAN_API_KEY="$key" -e PNEUMOSCAN_QUEUE_URL="redis://127.0.0.1:$redis_port/0"
        -e PNEUMOSCAN_INPUT_ROOTS=/data/input -v "$work/input:/data/input:ro" -v "$work/jobs:/data/jobs")
say "running the service and a worker from pneumoscan:latest"
podman run -d --name "$project-service" "${common[@]}" pneumoscan:latest \
    bentoml serve service.service:Pneumoscan --host 127.0.0.1 --port "$port" >/dev/null || fail "podman run (service)"
podman run -d --name "$project-worker" "${common[@]}" pneumoscan:latest pneumoscan worker >/dev/null \
    || fail "podman run (worker)"
check_service "http://127.0.0.1:$port"
podman rm -f "$project-service" "$project-worker" >/dev/null

# --- 4. the compose file ---------------------------------------------------------------------
# podman runs no healthchecks without systemd, so `service_healthy` is not waited for here:
# check_service polls /readyz itself.
mkdir -p "$work/compose-jobs"
cp -r tests/fixtures/xrays "$work/compose-input"
chown 10001 "$work/compose-jobs"
compose_port=$(free_port)
dicom_port=$(free_port)
say "running docker-compose.yml under podman-compose"
export PNEUMOSCAN_API_KEY="$key" PNEUMOSCAN_PORT="$compose_port" PNEUMOSCAN_HOST_INPUT="$work/compose-input" \
    PNEUMOSCAN_HOST_OUTPUT="$work/compose-jobs" PNEUMOSCAN_DICOM_PORT="$dicom_port" \
    PNEUMOSCAN_DICOM_ALLOWED_AES=CONTAINERTEST PNEUMOSCAN_DICOM_STUDY_QUIET_S=2
# The services by name: podman-compose 1.0 (Debian 12) ignores profiles and would start the monitoring one too.
"${compose[@]}" up -d redis service worker dicom-node >"$work/compose.log" 2>&1 || { cat "$work/compose.log" >&2; fail "podman-compose up"; }
inputs=$(find "$work/compose-input" -name '*.jpeg' | wc -l)
check_service "http://127.0.0.1:$compose_port"

# The compose file's DICOM node: a frontal chest DX in by C-STORE, queued as a job once its study
# is quiet, scored by the worker container through the shared volume; with no destination set,
# its SR and Secondary Capture wait in the outbox on that volume.
dicom="$work/chest.dcm"
.venv/bin/python - "$dicom" <<'PY' || fail "writing the DICOM test file"
import sys

from PIL import Image

from tests.support import xray_paths
from tests.support.dicom_files import make_dicom

xray = next(path for path in xray_paths() if path.parent.name == "PNEUMONIA")
with open(sys.argv[1], "wb") as handle:
    handle.write(make_dicom(Image.open(xray).convert("L")))
PY
deadline=$((SECONDS + 120))
until storescu -aet CONTAINERTEST -aec PNEUMOSCAN 127.0.0.1 "$dicom_port" "$dicom" >"$work/storescu.log" 2>&1; do
    [ $SECONDS -lt $deadline ] || { cat "$work/storescu.log" >&2; fail "C-STORE to the compose file's DICOM node"; }
    sleep 2
done
outbox="$(podman volume inspect "${project}_var" --format '{{.Mountpoint}}')/dicom/outbox"
deadline=$((SECONDS + 240))
until [ "$(find "$outbox" -name '*.dcm' 2>/dev/null | wc -l)" -ge 2 ]; do
    [ $SECONDS -lt $deadline ] || fail "no SR and Secondary Capture in the DICOM node's outbox after 240 s"
    sleep 2
done
say "DICOM node on port $dicom_port: a C-STORE scored by the worker, $(find "$outbox" -name '*.dcm' | wc -l) results in its outbox"
