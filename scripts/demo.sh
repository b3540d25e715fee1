#!/usr/bin/env bash
# The main job (`make demo`): serve the shipped models (es→en and en→es), translate a few sentences each
# way through the gRPC client, translate the Bible test split both ways with `rnnmt batch` and score it
# with sacreBLEU, then stop the server.
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

# The directions served: the shipped packages, or whatever one package RNNMT_MODEL_DIR points at.
if [ -f "$model_dir/manifest.json" ]; then
  pairs=("")
else
  pairs=()
  for pair in es-en en-es; do [ -f "$model_dir/bible-$pair/manifest.json" ] && pairs+=("$pair"); done
  [ ${#pairs[@]} -gt 0 ] || pairs=("")
fi
model_of() { [ -n "$1" ] && echo "bible-$1" || true; }
default_model=$(model_of "${pairs[0]}")

step "1/4 starting rnnmt serve on $model_dir (port $port)"
$rnnmt serve --model-dir "$model_dir" --port "$port" ${default_model:+--default-model "$default_model"} \
  > "$work/server.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  if $rnnmt health --server "localhost:$port" >/dev/null 2>&1; then break; fi
  if ! kill -0 $server 2>/dev/null; then cat "$work/server.log"; echo "the server did not start" >&2; exit 1; fi
  sleep 0.5
done
$rnnmt health --server "localhost:$port"

# Verses in each corpus's own spelling (Reina-Valera 1909 writes "crió", "fué"; the World English Bible
# "Yahweh"), then a modern sentence: the models' limits.
examples_es=(
  "En el principio crió Dios los cielos y la tierra."
  "Jehová es mi pastor; nada me faltará."
  "Y dijo Dios: Sea la luz: y fué la luz."
  "Bienaventurados los pacificadores: porque ellos serán llamados hijos de Dios."
  "El tren a Madrid sale a las ocho de la mañana."
)
examples_en=(
  "In the beginning, God created the heavens and the earth."
  "Yahweh is my shepherd; I shall lack nothing."
  "God said, “Let there be light,” and there was light."
  "Blessed are the peacemakers, for they shall be called children of God."
  "The train to Madrid leaves at eight in the morning."
)
step "2/4 translating a few sentences each way through the gRPC client"
for pair in "${pairs[@]}"; do
  [ -n "$pair" ] && echo "-- ${pair%-*} → ${pair#*-} ($(model_of "$pair"))"
  if [ "$pair" = en-es ]; then examples=("${examples_en[@]}"); else examples=("${examples_es[@]}"); fi
  $rnnmt translate --server "localhost:$port" --model "$(model_of "$pair")" "${examples[@]}"
done

step "3/4 the Bible test split through rnnmt batch"
if [ ! -s data/bible/test.es ]; then
  if ! $rnnmt data bible --out data/bible; then
    echo "skipped: the Bible corpus needs Debian's SWORD modules; as root run:"
    echo "  apt-get install sword-text-sparv sword-text-web sword-text-kjv   # then: make demo"
  fi
fi
if [ -s data/bible/test.es ]; then
  for pair in "${pairs[@]}"; do
    src=${pair%-*} tgt=${pair#*-}
    [ -n "$pair" ] || { src=es tgt=en; }
    echo "-- $src → $tgt"
    status=0
    $rnnmt batch "data/bible/test.$src" --out "$work/test.hyp.$tgt" --server "localhost:$port" \
      --model-name "$(model_of "$pair")" --reference "data/bible/test.$tgt" --restart || status=$?
    [ $status -eq 0 ] || echo "rnnmt batch exited with $status (see $work/test.hyp.$tgt.errors.jsonl)"
  done
fi

step "4/4 stopping the server (SIGTERM, graceful drain)"
kill -TERM $server
trap - EXIT
if wait $server; then echo "server exited cleanly"; else echo "server exited with $?" >&2; exit 1; fi
