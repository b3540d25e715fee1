#!/usr/bin/env bash
# The recipe of a shipped model (`make model`; `make model PAIR=en-es` for the reverse direction): build
# the Bible corpus, train configs/bible-$PAIR.yaml from scratch (60-minute budget; MINUTES=N trains
# longer), export best.pt ($EXPORT_FLAGS), record its dev and test scores (beam 5) in the package's
# manifest, and replace models/bible-$PAIR only when the new test BLEU is higher than the shipped one's
# (every shipped copy stays in git history). FORCE=1 replaces it anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
pair="${PAIR:-es-en}"
src="${pair%-*}"
tgt="${pair#*-}"
rnnmt=.venv/bin/rnnmt
config="configs/bible-$pair.yaml"
shipped="models/bible-$pair"
candidate="build/ship/bible-$pair"
read -r -a export_flags <<< "${EXPORT_FLAGS:---quantize int8-rows}"

[ -s data/bible/test.es ] || $rnnmt data bible --out data/bible
if [ -n "${MINUTES:-}" ]; then
  tmp_config="$(mktemp --suffix .yaml -p configs)"
  trap 'rm -f "$tmp_config"' EXIT
  sed "s/^  max_minutes: .*/  max_minutes: $MINUTES/" "$config" > "$tmp_config"
  config="$tmp_config"
fi
$rnnmt train "$config" --restart
rm -rf "$candidate"
$rnnmt export "runs/bible-$pair/best.pt" --out "$candidate" "${export_flags[@]}"
for split in dev test; do
  $rnnmt evaluate "$candidate" --source "data/bible/$split.$src" --reference "data/bible/$split.$tgt" \
    --beam-size 5 --record "$split"
done

test_bleu() { .venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["evaluation"]["test"]["bleu"])' "$1/manifest.json"; }
new=$(test_bleu "$candidate")
if [ -f "$shipped/manifest.json" ] && [ "${FORCE:-0}" != 1 ]; then
  old=$(test_bleu "$shipped")
  if ! .venv/bin/python -c 'import sys; sys.exit(float(sys.argv[1]) <= float(sys.argv[2]))' "$new" "$old"; then
    echo "kept $shipped: test BLEU $new is not above the shipped $old (FORCE=1 replaces it)"
    exit 0
  fi
fi
rm -rf "$shipped"
mkdir -p "$(dirname "$shipped")"
cp -r "$candidate" "$shipped"
echo "shipped $shipped: test BLEU $new ($(du -sh "$shipped" | cut -f1))"
