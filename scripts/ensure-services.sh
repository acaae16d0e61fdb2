#!/usr/bin/env bash
# Make sure what the demo, tests and benchmarks need is present and running:
# PostgreSQL server binaries, RabbitMQ, and the Debian tools pgbackrest and age.
set -euo pipefail

say() { printf 'ensure-services: %s\n' "$*"; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
apt_updated=0
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    say "missing Debian package(s) $*: run 'sudo apt-get install $*'"; return 1
  fi
  if [ "$apt_updated" = 0 ]; then apt-get update -qq >/dev/null; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# PostgreSQL server binaries (initdb, pg_ctl, pg_waldump ...)
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "$pgbin" ] || [ ! -x "$pgbin/initdb" ]; then
  say "PostgreSQL server binaries not found; installing postgresql-15"
  apt_install postgresql-15 postgresql-contrib || { say "install PostgreSQL 15 (postgresql-15)"; exit 1; }
fi
for pkg in pgbackrest age; do
  have_pkg "$pkg" || { say "installing $pkg"; apt_install "$pkg" || exit 1; }
done

# RabbitMQ on 127.0.0.1:5672 unless the tests are pointed elsewhere
if [ -z "${PGVAULT_TEST_AMQP_URL:-}" ]; then
  if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    if ! command -v rabbitmq-server >/dev/null; then
      say "RabbitMQ not installed; installing rabbitmq-server"
      apt_install rabbitmq-server || { say "install rabbitmq-server or set PGVAULT_TEST_AMQP_URL"; exit 1; }
    fi
    say "starting RabbitMQ"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do
      (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && break
      sleep 1
    done
    (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null || { say "RabbitMQ did not come up on :5672"; exit 1; }
  fi
fi
say "ok (PostgreSQL binaries in ${pgbin:-$(ls -d /usr/lib/postgresql/*/bin | tail -n1)}, RabbitMQ reachable)"
