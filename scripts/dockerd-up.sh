#!/bin/sh
# Make sure a Docker daemon answers on the default socket; start one if not.
# Idempotent: does nothing when `docker info` already works.
set -e
if docker info >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
    echo "no Docker daemon answers and starting one needs root" >&2
    exit 1
fi
log=/var/log/dockerops-dockerd.log
echo "starting dockerd (log: $log)"
# The machine has no init system for it: run it detached, in its own session.
setsid dockerd >"$log" 2>&1 < /dev/null &
i=0
until docker info >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 120 ]; then
        echo "dockerd did not answer within 60 s; last log lines:" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
    sleep 0.5
done
