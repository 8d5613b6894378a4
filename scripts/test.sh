#!/usr/bin/env bash
# Everything CI checks, in the order that fails fastest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin

echo "== ruff"
$bin/ruff check src tests bench
$bin/ruff format --check src tests bench
echo "== mypy"
$bin/mypy
echo "== compose file"
if ! command -v docker-compose >/dev/null && [[ $(id -u) == 0 && -f /etc/debian_version ]]; then
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi
if command -v docker-compose >/dev/null; then
  docker-compose -f compose.yaml config -q && echo "compose.yaml is valid"
elif [[ "${CI:-}" == true ]]; then
  echo "docker-compose is missing; CI needs it to check compose.yaml" >&2; exit 1
else
  echo "docker-compose not installed; skipping the compose.yaml check"
fi
echo "== browser"
# The browser tests drive Debian's chromium (never a downloaded browser).
if ! command -v chromium >/dev/null && [[ $(id -u) == 0 && -f /etc/debian_version ]]; then
  apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null
fi
if command -v chromium >/dev/null; then
  chromium --version
elif [[ "${CI:-}" == true ]]; then
  echo "chromium is missing; CI needs it for the browser tests" >&2; exit 1
fi
echo "== pytest"
$bin/pytest "$@"
