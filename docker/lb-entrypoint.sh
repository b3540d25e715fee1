#!/bin/sh
# The lb image's entrypoint: nginx proxying gRPC to every address of RNNMT_UPSTREAM (host:port, default
# server:50051). nginx resolves the name when it (re)loads its configuration, so this script looks the
# name up every RNNMT_RESOLVE_SECONDS (default 5) and reloads nginx when the addresses change. SIGTERM
# (docker stop) becomes nginx's graceful stop: calls in progress finish first.
set -eu
upstream="${RNNMT_UPSTREAM:-server:50051}"
host="${upstream%:*}"
sed "s|@RNNMT_UPSTREAM@|$upstream|" /etc/rnnmt/nginx.conf > /tmp/nginx.conf

addresses() { getent ahostsv4 "$host" | awk '{print $1}' | sort -u | tr '\n' ' '; }

nginx -e stderr -c /tmp/nginx.conf -g 'daemon off;' &
nginx_pid=$!
stopping=""
trap 'stopping=1; kill -QUIT "$nginx_pid" 2>/dev/null || true' TERM INT QUIT
known=$(addresses || true)
echo "rnnmt-lb: $upstream → $known" >&2
while [ -z "$stopping" ] && kill -0 "$nginx_pid" 2>/dev/null; do
  sleep "${RNNMT_RESOLVE_SECONDS:-5}" &
  wait $! || true
  [ -z "$stopping" ] || break
  now=$(addresses || true)
  if [ -n "$now" ] && [ "$now" != "$known" ]; then
    echo "rnnmt-lb: $host is now $now: reloading nginx" >&2
    nginx -e stderr -c /tmp/nginx.conf -s reload || true
    known=$now
  fi
done
status=0
wait "$nginx_pid" || status=$?
exit "$status"
