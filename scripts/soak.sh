#!/usr/bin/env bash
# Soak: the fault suite's main test (tests/faults/test_never_lose_a_job.py) once per
# seed; each seed orders and times the kills and restarts differently.
#
#   bash scripts/soak.sh               # seeds 1 to 20
#   bash scripts/soak.sh 50 1000       # 50 runs, seeds 1000 to 1049
#
# Each run's output is kept in .cache/soak/seed-N.log; one line per seed as it
# ends, then a summary. Exits non-zero if any seed failed: rerun one with
# FACTQ_FAULT_SEED=N .venv/bin/pytest tests/faults/test_never_lose_a_job.py
# Needs Redis (redis-server on PATH), RabbitMQ and root for rabbitmqctl, as the suite does.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-20}
first=${2:-1}
out=.cache/soak
mkdir -p "$out"
report="$out/figures.jsonl"
: >"$report"
failed=()
started=$SECONDS

for ((seed = first; seed < first + runs; seed++)); do
  log="$out/seed-$seed.log"
  run_started=$SECONDS
  if FACTQ_FAULT_SEED=$seed FACTQ_FAULT_REPORT=$report \
    .venv/bin/pytest tests/faults/test_never_lose_a_job.py -p no:cacheprovider -q >"$log" 2>&1; then
    verdict=passed
  else
    verdict=FAILED
    failed+=("$seed")
  fi
  printf 'seed %-6s %-6s %4d s   %s\n' "$seed" "$verdict" $((SECONDS - run_started)) "$log"
done

.venv/bin/python - "$report" <<'PY'
import json, sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
if not rows:
    sys.exit("no figures were written: see the logs")
columns = [
    ("seed", "seed"), ("jobs", "jobs"), ("kills", "worker_kills"), ("mid-job", "kills_mid_job"),
    ("rmq", "rabbitmq_restarts"), ("redis", "redis_restarts"), ("lost", "lost"),
    ("stuck", "stuck"), ("twice", "completed_twice"), ("runs", "executions"),
    ("reruns", "re_executions"), ("503-ran", "refused_but_ran"),
    ("2-jobs", "submissions_made_twice"),
    ("503-up", "answers_503_redis_back"), ("problems", None), ("s", "runtime_s"),
]
print()
print("  ".join(f"{title:>8}" for title, _ in columns))
for row in rows:
    cells = [len(row["problems"]) if key is None else row[key] for _, key in columns]
    print("  ".join(f"{cell:>8g}" for cell in cells))
total = {key: sum(row[key] for row in rows) for _, key in columns[1:] if key}
print(
    f"\n{len(rows)} runs: {total['jobs']} jobs, {total['worker_kills']} worker kills, "
    f"{total['rabbitmq_restarts']} RabbitMQ and {total['redis_restarts']} Redis restarts; "
    f"lost {total['lost']}, stuck {total['stuck']}, completed twice {total['completed_twice']}; "
    f"{total['re_executions']} re-executions in {total['executions']} executions"
)
PY

echo "soak: $runs runs in $((SECONDS - started)) s"
if ((${#failed[@]})); then
  echo "soak: FAILED seeds: ${failed[*]} (logs in $out)" >&2
  exit 1
fi
