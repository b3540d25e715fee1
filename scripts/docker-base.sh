#!/usr/bin/env bash
# Builds the base image every rnnmt Dockerfile starts from (`rnnmt-debian:bookworm`), without any image
# registry: a minimal Debian bookworm made by mmdebstrap from this machine's own apt sources, with
# Debian's python3 (3.11, the version the pinned wheels are built for) and python3-venv, imported with
# `docker import`. Skipped when the tag already exists (pass --force to rebuild).
#
#   scripts/docker-base.sh [--force]          (root; needs mmdebstrap and a running dockerd)
#
# Environment: RNNMT_BASE_IMAGE (the tag, default rnnmt-debian:bookworm), RNNMT_APT_SOURCES (an apt
# sources file, one-line or deb822, to use instead of the Debian entries of /etc/apt/sources.list*).
set -euo pipefail
tag="${RNNMT_BASE_IMAGE:-rnnmt-debian:bookworm}"
suite=bookworm

if [ "${1:-}" != "--force" ] && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "== base image $tag exists (scripts/docker-base.sh --force rebuilds it)"
  exit 0
fi
command -v mmdebstrap >/dev/null || { echo "mmdebstrap is missing: apt-get install mmdebstrap" >&2; exit 1; }

# The apt sources: this machine's Debian entries (not third-party repositories, whose keys the image
# would not have), so the image gets exactly the mirror this machine is allowed to reach.
sources=()
if [ -n "${RNNMT_APT_SOURCES:-}" ]; then
  sources=("$RNNMT_APT_SOURCES")
else
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && grep -v '^\s*#' "$f" | grep -q -E '/debian(-security)?/?(\s|$)' && sources+=("$f")
  done
fi
[ ${#sources[@]} -gt 0 ] || { echo "no Debian apt sources found; set RNNMT_APT_SOURCES" >&2; exit 1; }

old_id=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
echo "== building base image $tag with mmdebstrap ($suite, sources: ${sources[*]})"
start=$SECONDS
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# minbase + python3: no docs, man pages or translations, no apt lists (Dockerfiles run apt-get update).
# shellcheck disable=SC2016  # the hook's $1 (the chroot) is expanded by mmdebstrap
nice -n 19 mmdebstrap --quiet --variant=minbase --include=python3,python3-venv \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --aptopt='Acquire::Languages "none"' --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*.log' \
  "$suite" "$tmp/rootfs.tar" "${sources[@]}"
nice -n 19 docker import \
  --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  --change "LABEL org.opencontainers.image.title=rnnmt-debian org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  --message "mmdebstrap --variant=minbase $suite + python3" \
  "$tmp/rootfs.tar" "$tag" >/dev/null
# The image this one replaces (--force), unless images built on it still use it.
[ -z "$old_id" ] || docker rmi "$old_id" >/dev/null 2>&1 || true
echo "== $tag built in $((SECONDS - start)) s ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
