#!/usr/bin/env bash
# The trainer service (the default command of the training image): corpus → training → model package.
#
#   1. the Bible corpus into data/bible with `rnnmt data bible` (skipped when it is there);
#   2. `rnnmt train` with the reference config, in runs/NAME (resumes from latest.pt after a stop);
#   3. `rnnmt export` of best.pt into $RNNMT_MODEL_DIR/NAME, the volume the server reads. A package
#      already there is kept as a hidden folder (.NAME.<time>), which the server skips; restart the
#      server to load the new one.
#
# Environment: RNNMT_TRAIN_CONFIG (default configs/bible-es-en.yaml), RNNMT_MODEL_NAME (bible-es-en),
# RNNMT_TRAIN_MAX_MINUTES (overrides the config's budget), RNNMT_EXPORT_QUANTIZE (int8 or empty),
# RNNMT_MODEL_DIR (/models). SIGTERM stops the running step; training resumes where it left off.
set -euo pipefail
config="${RNNMT_TRAIN_CONFIG:-configs/bible-es-en.yaml}"
name="${RNNMT_MODEL_NAME:-bible-es-en}"
models="${RNNMT_MODEL_DIR:-/models}"
run_dir="$PWD/runs/$name"

# Each step runs as a child; SIGTERM/SIGINT (docker stop) is passed on to it, and the pipeline stops.
child=
stopping=
on_signal() {
  stopping=1
  if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null || true; fi
}
trap on_signal TERM INT
step() {
  echo "== $*" >&2
  "$@" &
  child=$!
  local status=0
  wait "$child" || status=$?
  while kill -0 "$child" 2>/dev/null; do wait "$child" || status=$?; done
  child=
  if [ -n "$stopping" ]; then echo "== stopped" >&2; exit 143; fi
  return "$status"
}

if [ ! -e data/bible/.complete ]; then
  step rnnmt data bible --out data/bible
  touch data/bible/.complete
fi
step rnnmt train "$config" --run-dir "$run_dir" ${RNNMT_TRAIN_MAX_MINUTES:+--max-minutes "$RNNMT_TRAIN_MAX_MINUTES"}
if [ -e "$models/$name" ]; then
  mv "$models/$name" "$models/.$name.$(date -u +%Y%m%dT%H%M%SZ)"
fi
step rnnmt export "$run_dir/best.pt" --out "$models/$name" ${RNNMT_EXPORT_QUANTIZE:+--quantize "$RNNMT_EXPORT_QUANTIZE"}
echo "== model package $models/$name is ready: restart the server to serve it" >&2
