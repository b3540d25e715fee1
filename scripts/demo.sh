#!/usr/bin/env bash
# The main job (`make demo`): serve the shipped model, translate a few sentences through the gRPC client,
# translate the Bible test split with `rnnmt batch` and score it with sacreBLEU, then stop the server.
set -euo pipefail
cd "$(dirname "$0")/.."
rnnmt=.venv/bin/rnnmt
model_dir=${RNNMT_MODEL_DIR:-models}
port=${RNNMT_DEMO_PORT:-50051}
work=build/demo
mkdir -p "$work"

step() { printf '\n== %s\n' "$*"; }

if [ ! -f "$model_dir/manifest.json" ] && ! compgen -G "$model_dir/*/manifest.json" >/dev/null; then
  echo "no model package in $model_dir/. Train and export one (or set RNNMT_MODEL_DIR to a package):"
  echo "  .venv/bin/rnnmt data bible --out data/bible && .venv/bin/rnnmt train configs/bible-es-en.yaml"
  echo "  .venv/bin/rnnmt export runs/bible-es-en/best.pt --out $model_dir/bible-es-en"
  exit 1
fi

step "1/4 starting rnnmt serve on $model_dir (port $port)"
$rnnmt serve --model-dir "$model_dir" --port "$port" --metrics-port 0 > "$work/server.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  if $rnnmt health --server "localhost:$port" >/dev/null 2>&1; then break; fi
  if ! kill -0 $server 2>/dev/null; then cat "$work/server.log"; echo "the server did not start" >&2; exit 1; fi
  sleep 0.5
done
$rnnmt health --server "localhost:$port"

step "2/4 translating a few sentences through the gRPC client"
$rnnmt translate --server "localhost:$port" \
  "En el principio crió Dios los cielos y la tierra." \
  "Jehová es mi pastor; nada me faltará." \
  "Y dijo Dios: Sea la luz: y fué la luz." \
  "Bienaventurados los pacificadores: porque ellos serán llamados hijos de Dios." \
  "El tren a Madrid sale a las ocho de la mañana."   # modern Spanish: the model's limits

step "3/4 the Bible test split through rnnmt batch"
if [ ! -s data/bible/test.es ]; then
  if ! $rnnmt data bible --out data/bible; then
    echo "skipped: the Bible corpus needs Debian's SWORD modules; as root run:"
    echo "  apt-get install sword-text-sparv sword-text-web sword-text-kjv   # then: make demo"
  fi
fi
if [ -s data/bible/test.es ]; then
  status=0
  $rnnmt batch data/bible/test.es --out "$work/test.hyp.en" --server "localhost:$port" \
    --reference data/bible/test.en --restart || status=$?
  [ $status -eq 0 ] || echo "rnnmt batch exited with $status (see $work/test.hyp.en.errors.jsonl)"
fi

step "4/4 stopping the server (SIGTERM, graceful drain)"
kill -TERM $server
trap - EXIT
if wait $server; then echo "server exited cleanly"; else echo "server exited with $?" >&2; exit 1; fi
