#!/usr/bin/env bash
# Regenerates the Python stubs of protos/ (messages, gRPC stubs, type stubs) into rnnmt/v1/, or into
# the directory given as the first argument (tests/test_protos.py does that to detect stale stubs).
# Uses grpcio-tools from the venv (rnnmt[dev]); set PYTHON to use another interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-.}"
python="${PYTHON:-.venv/bin/python}"
mkdir -p "$out"
"$python" -m grpc_tools.protoc -I protos \
  --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" \
  protos/rnnmt/v1/translator.proto protos/rnnmt/v1/admin.proto
