#!/usr/bin/env bash
# The main job: builds the Spanish-English Bible corpus from Debian's SWORD modules.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/rnnmt data bible --out data/bible
