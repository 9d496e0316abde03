#!/usr/bin/env bash
# Make sure the local PostgreSQL (127.0.0.1:5432, database `test`), Redis (127.0.0.1:6379) and RabbitMQ
# (127.0.0.1:5672, guest/guest) the integration tests use are installed and running; install them with
# apt-get when missing.
set -euo pipefail

apt_install() {
  if [ -z "${_APT_UPDATED:-}" ]; then apt-get update -qq; _APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "installing PostgreSQL"; apt_install postgresql
    local hba; hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -n1)
    sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
  if ! psql -h 127.0.0.1 -U postgres -d test -qtAc "select 1" >/dev/null 2>&1; then
    psql -h 127.0.0.1 -U postgres -qc "create database test" >/dev/null 2>&1 \
      || su postgres -c "createdb test" >/dev/null 2>&1 || true
  fi
  pg_isready -h 127.0.0.1 -p 5432
}

ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then echo "installing Redis"; apt_install redis-server; fi
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 1; done
  fi
  redis-cli -h 127.0.0.1 -p 6379 ping
}

rabbitmq_up() {
  python3 - <<'PY' 2>/dev/null
import socket, sys
try:
    with socket.create_connection(("127.0.0.1", 5672), timeout=2) as s:
        s.sendall(b"AMQP\x00\x00\x09\x01")  # protocol header: a live broker answers with connection.start
        sys.exit(0 if s.recv(8) else 1)
except OSError:
    sys.exit(1)
PY
}

ensure_rabbitmq() {
  if ! command -v rabbitmq-server >/dev/null 2>&1; then echo "installing RabbitMQ"; apt_install rabbitmq-server; fi
  if ! rabbitmq_up; then
    echo "starting RabbitMQ"
    rabbitmq-server -detached || true
    for _ in $(seq 1 60); do rabbitmq_up && break; sleep 1; done
  fi
  # A test stops and starts the broker application; make sure it is not left stopped.
  rabbitmqctl -q start_app >/dev/null 2>&1 || true
  rabbitmq_up && echo "RabbitMQ up"
}

ensure_postgres
ensure_redis
ensure_rabbitmq
