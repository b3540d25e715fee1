#!/usr/bin/env bash
# Builds the rnnmt images: rnnmt-serve, rnnmt-train and rnnmt-lb (tag $RNNMT_TAG, default dev).
#
#   scripts/docker-build.sh [SERVICE...]     (default: server trainer lb; root, or a docker group member)
#   scripts/docker-build.sh --constraints    (rewrite docker/constraints.txt from .venv, then exit)
#
# 1. the base image rnnmt-debian:bookworm (scripts/docker-base.sh; skipped when it exists);
# 2. what the builds need from this machine:
#    - build/docker/ca-certificates.crt, the CA bundle pip trusts here (PIP_CERT, pip's `cert`, or the
#      system's), for pip inside the builds (which reach PyPI, or this machine's remote index-url);
#    - the image rnnmt-torch-wheel:<version> (made once) holding the CPU wheel of the torch version in
#      docker/constraints.txt, taken from pip's find-links folders here. PyPI's torch for Linux is the
#      CUDA build (a 0.5 GB wheel that pulls several GB of CUDA libraries); the CPU build only comes
#      from PyTorch's own index, which is tried last;
# 3. `docker-compose build` of the services, with docker/compose.scale.yml (for lb), one after the
#    other: rnnmt-serve and rnnmt-train are targets of docker/rnnmt.Dockerfile, whose shared stages
#    (the venv, rnnmt built from source) are then built once and reused from the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=build/docker
compose=(docker-compose -f docker-compose.yml -f docker/compose.scale.yml)
[ -x .venv/bin/docker-compose ] && compose[0]=.venv/bin/docker-compose

if [ "${1:-}" = "--constraints" ]; then
  {
    sed -n '/^#/p' docker/constraints.txt
    .venv/bin/python - <<'EOF'
import re
from importlib.metadata import distribution

from packaging.requirements import Requirement

def key(name):
    return re.sub(r"[-_.]+", "-", name).lower()

seen = {}
def walk(name, extras):
    dist = distribution(name)
    k = key(dist.metadata["Name"])
    if k in seen and set(extras) <= seen[k]:
        return
    seen.setdefault(k, set()).update(extras)
    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ["", *extras]):
            walk(req.name, req.extras)

walk("rnnmt", ["train", "serve"])
walk("setuptools", [])  # builds rnnmt inside the image
for k in sorted(seen):
    if k != "rnnmt":
        print(f"{k}=={distribution(k).version}")
EOF
  } > docker/constraints.txt.new
  mv docker/constraints.txt.new docker/constraints.txt
  echo "== docker/constraints.txt rewritten from .venv"
  exit 0
fi

services=("$@")
[ ${#services[@]} -gt 0 ] || services=(server trainer lb)

bash scripts/docker-base.sh

mkdir -p "$stage"
pip=(python3 -m pip)
[ -x .venv/bin/pip ] && pip=(.venv/bin/pip)
ca="${PIP_CERT:-$("${pip[@]}" config get global.cert 2>/dev/null || true)}"
[ -f "$ca" ] || ca=/etc/ssl/certs/ca-certificates.crt
cp "$ca" "$stage/ca-certificates.crt"

# The CPU torch wheel, as the image rnnmt-torch-wheel:<version> (made once; the train target copies from it).
torch=$(sed -n 's/^torch==//p' docker/constraints.txt)
wheel_image="rnnmt-torch-wheel:${torch//+/-}"
if printf '%s\n' "${services[@]}" | grep -qx trainer && ! docker image inspect "$wheel_image" >/dev/null 2>&1; then
  wheel="torch-${torch}-cp311-cp311-manylinux_2_28_x86_64.whl"  # Debian bookworm: CPython 3.11
  rm -rf "$stage/wheels"
  mkdir -p "$stage/wheels"
  links="${PIP_FIND_LINKS:-} $("${pip[@]}" config get global.find-links 2>/dev/null || true) /opt/wheels"
  for dir in $links; do
    dir="${dir#file://}"
    if [ -f "$dir/$wheel" ]; then
      cp "$dir/$wheel" "$stage/wheels/"
      echo "== staged $dir/$wheel"
      break
    fi
  done
  if [ ! -f "$stage/wheels/$wheel" ]; then
    echo "== $wheel is not on this machine: downloading it from PyTorch's CPU index"
    "${pip[@]}" download --no-deps --only-binary=:all: --python-version 3.11 \
      --platform manylinux_2_28_x86_64 --index-url https://download.pytorch.org/whl/cpu \
      --dest "$stage/wheels" "torch==$torch"
  fi
  nice -n 19 docker build -q -f docker/torch-wheel.Dockerfile -t "$wheel_image" "$stage/wheels" >/dev/null
  rm -rf "$stage/wheels"
  echo "== $wheel_image built"
fi

# The pip index the builds use: this machine's when it is a remote one (local file:// folders do not
# exist inside a build), else PyPI.
index="${PIP_INDEX_URL:-$("${pip[@]}" config get global.index-url 2>/dev/null || true)}"
case "$index" in http://* | https://*) ;; *) index=https://pypi.org/simple ;; esac

start=$SECONDS
for service in "${services[@]}"; do
  nice -n 19 "${compose[@]}" build --build-arg "PIP_INDEX_URL=$index" \
    --build-arg "TORCH_WHEEL_IMAGE=$wheel_image" "$service"
done
echo "== built ${services[*]} in $((SECONDS - start)) s"
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^rnnmt-' || true
