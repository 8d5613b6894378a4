#!/usr/bin/env bash
# Make sure Redis and RabbitMQ answer on this machine before factq runs.
# Started when installed but stopped; installed with apt-get when missing and
# allowed (root on Debian or Ubuntu); otherwise this says exactly what to run.
# Servers named by a non-local FACTQ_REDIS_URL / FACTQ_AMQP_URL are left alone.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state="$root/.cache/services"
mkdir -p "$state"

say() { printf 'services: %s\n' "$*" >&2; }

# host and port of a URL, with a default port
endpoint() {
  python3 - "$1" "$2" <<'PY'
import sys, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
print(url.hostname or "127.0.0.1", url.port or sys.argv[2])
PY
}

is_local() { [[ "$1" == 127.* || "$1" == localhost || "$1" == ::1 ]]; }
answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_for() {  # name host port seconds
  local deadline=$((SECONDS + $4))
  until answers "$2" "$3"; do
    if ((SECONDS > deadline)); then say "$1 did not come up on $2:$3 within $4 s"; return 1; fi
    sleep 0.5
  done
}

can_apt() { [[ $(id -u) == 0 && -f /etc/debian_version ]] && command -v apt-get >/dev/null; }

install_packages() {
  say "installing $* with apt-get"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

advise() {  # what a person should run instead
  say "$1 is not running and cannot be started from here. Either:"
  say "  sudo apt-get install -y $2   (then run this command again)"
  say "  docker compose up -d redis rabbitmq"
  say "or point FACTQ_REDIS_URL / FACTQ_AMQP_URL at running servers."
  exit 1
}

ensure_redis() {
  read -r host port < <(endpoint "${FACTQ_REDIS_URL:-redis://127.0.0.1:6379/0}" 6379)
  answers "$host" "$port" && return 0
  is_local "$host" || { say "Redis at $host:$port does not answer"; exit 1; }
  if ! command -v redis-server >/dev/null; then
    can_apt || advise Redis redis-server
    install_packages redis-server
  fi
  say "starting Redis on port $port"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$port" --save "" \
    --appendonly no --dir "$state" --logfile "$state/redis.log"
  wait_for Redis "$host" "$port" 30
}

ensure_rabbitmq() {
  read -r host port < <(endpoint "${FACTQ_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}" 5672)
  answers "$host" "$port" && return 0
  is_local "$host" || { say "RabbitMQ at $host:$port does not answer"; exit 1; }
  if ! command -v rabbitmq-server >/dev/null && [[ ! -x /usr/sbin/rabbitmq-server ]]; then
    can_apt || advise RabbitMQ rabbitmq-server
    install_packages rabbitmq-server
  fi
  say "starting RabbitMQ (this takes a few seconds)"
  PATH="$PATH:/usr/sbin" rabbitmq-server -detached >/dev/null 2>&1 || true
  PATH="$PATH:/usr/sbin" timeout 120 rabbitmqctl await_startup >/dev/null 2>&1 || true
  wait_for RabbitMQ "$host" "$port" 60
}

ensure_redis
ensure_rabbitmq
