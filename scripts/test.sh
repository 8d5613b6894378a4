#!/usr/bin/env bash
# Everything CI checks, in the order that fails fastest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
started=$SECONDS
stage() { echo "== $1 (at $((SECONDS - started)) s)"; }

# A fresh venv holds no bytecode (scripts/install.py compiles nothing): each
# module is compiled on its first import and kept. What the services and the
# model import is compiled now, beside the linters, so that no test's processes
# compile PyTorch together within the test's time limit.
unset PYTHONDONTWRITEBYTECODE
$bin/python -c "import factq.api, factq.cli.serve, factq.worker, sentence_transformers, torch" &
compiling=$!

stage "ruff"
$bin/ruff check src tests bench
$bin/ruff format --check src tests bench
stage "mypy"
$bin/mypy
stage "import contracts"
$bin/lint-imports
stage "compose file"
# Against the Compose Specification's schema shipped with check-jsonschema:
# offline, and no system package needed.
$bin/check-jsonschema --builtin-schema vendor.compose-spec compose.yaml
stage "kubernetes manifests"
# deploy/k8s against Kubernetes' schemas (shipped with kubernetes-validate) and
# KEDA's (vendored in deploy/k8s/schemas), strict, then their cross-references.
$bin/python scripts/validate-k8s.py
stage "browser"
# The browser tests drive Debian's chromium (never a downloaded browser).
if ! command -v chromium >/dev/null && [[ $(id -u) == 0 && -f /etc/debian_version ]]; then
  echo "installing Debian's chromium with apt-get, for the browser tests"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if command -v chromium >/dev/null; then
  chromium --version
elif [[ "${CI:-}" == true ]]; then
  echo "chromium is missing; CI needs it for the browser tests (apt-get install chromium)" >&2
  exit 1
else
  echo "chromium is not installed: the browser tests will be skipped (apt-get install chromium)"
fi
wait "$compiling"
stage "pytest"
# Two processes (pytest-xdist; most tests wait on services more than they
# compute), the tests that share a costly fixture on one of them, and a test
# marked `alone` run by itself (tests/support/parallel.py); `-n 0` after these
# runs one test at a time. The slowest tests, so that the suite's time stays visible.
$bin/pytest -n 2 --durations=15 "$@"
echo "== done in $((SECONDS - started)) s"
