#!/bin/sh
# Install the Debian packages dockerops' demo and tests need, only when missing.
# Idempotent: a second run installs nothing and makes no network call.
set -e
need=""
command -v dockerd >/dev/null 2>&1 || need="$need docker.io"
command -v docker-registry >/dev/null 2>&1 || need="$need docker-registry"
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx httpd || need="$need busybox-static"
command -v ip >/dev/null 2>&1 || need="$need iproute2"
# debootstrap builds the test bed's nginx image from Debian's packages (no registry pull).
command -v debootstrap >/dev/null 2>&1 || need="$need debootstrap"
# The metrics tests run Debian's Prometheus (and its promtool) and node_exporter on 127.0.0.1.
command -v promtool >/dev/null 2>&1 || need="$need prometheus"
command -v prometheus-node-exporter >/dev/null 2>&1 || need="$need prometheus-node-exporter"
# The logging tests run a private rsyslogd on 127.0.0.1 and check the formula's logrotate rule.
command -v rsyslogd >/dev/null 2>&1 || [ -x /usr/sbin/rsyslogd ] || need="$need rsyslog"
command -v logrotate >/dev/null 2>&1 || [ -x /usr/sbin/logrotate ] || need="$need logrotate"
# The config-from-etcd tests run Debian's etcd on 127.0.0.1.
command -v etcd >/dev/null 2>&1 || need="$need etcd-server"
# The backup tests run Debian's restic (snapshots, and the volume helper image holds it).
command -v restic >/dev/null 2>&1 || need="$need restic"
# The backup bench (make bench, bench/backup.py) compares restic with tar | zstd.
command -v zstd >/dev/null 2>&1 || need="$need zstd"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages:$need (run as root, or: apt-get install$need)" >&2
    exit 1
fi
echo "installing Debian packages:$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $need >/dev/null
