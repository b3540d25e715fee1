#!/usr/bin/env bash
# Creates .venv and installs rnnmt with the given extras (default: train,serve,dev,ray,shortlist), plus the Debian
# packages the project uses when this user can install them. Fast when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-train,serve,dev,ray,shortlist}"
python="${PYTHON:-python3}"

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  # SWORD modules: the Bible corpus; chromium and its driver: the browser test of the HTTP page.
  missing=$(for p in sword-text-sparv sword-text-web sword-text-kjv chromium chromium-driver libjemalloc2 libtcmalloc-minimal4; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    echo "== installing Debian packages: $missing"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; }; then
      echo "== could not install $missing: the Bible corpus steps and the browser test say what is missing; the rest works"
    fi
  fi
else
  echo "== not root: to build the Bible corpus and run the browser test, install: sudo apt-get install sword-text-sparv sword-text-web sword-text-kjv chromium chromium-driver"
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-${extras//,/-}"
if [ ! -f "$stamp" ]; then
  echo "== installing rnnmt[$extras] into .venv"
  .venv/bin/pip install -q -e ".[$extras]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# The npm LibreTranslate client the tests run against `rnnmt serve` (tests/clients), with the dev extras.
if [[ ",$extras," == *",dev,"* ]] && command -v npm >/dev/null; then
  lock="tests/clients/node_modules/.installed-$(sha256sum tests/clients/package-lock.json | cut -c1-16)"
  if [ ! -f "$lock" ]; then
    echo "== installing the npm test clients into tests/clients/node_modules"
    npm ci --prefix tests/clients --no-audit --no-fund --loglevel=error
    touch "$lock"
  fi
fi
