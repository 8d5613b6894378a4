"""Jobs' starts and ends as metrics, counted where the state change is made.

Every move that ends a job (finish, finish_from, a cancel of a queued job, a
start that finds it cancelled or expired) and every start goes through one
script whose reply says whether this call made the move: counting that reply
counts each job once, whichever process (a worker, the API) ended it. The
times are Redis's, the same as the job's `metrics.queue_s` and `metrics.run_s`.
"""

from __future__ import annotations

from typing import Final

from factq import metrics
from factq.state.records import Outcome, Transition

# Outcomes of a script that ended the job itself.
_ENDED: Final = frozenset({Outcome.FINISHED, Outcome.CANCELLED, Outcome.EXPIRED})


def observed(transition: Transition) -> Transition:
    """The transition, once the job it ended (and how long it ran) or first
    started (and how long it waited) is counted."""
    if transition.outcome is Outcome.STARTED:
        fields = transition.raw_fields()
        # A job's wait ends at its first start; a redelivery's is no queue wait.
        if fields.get(b"attempts") == b"1":
            task = fields[b"task"].decode()
            metrics.queue_wait(task).observe(
                float(fields[b"started_at"]) - float(fields[b"created_at"])
            )
    elif transition.outcome in _ENDED:
        fields = transition.raw_fields()
        task = fields[b"task"].decode()
        metrics.jobs_finished(task, fields[b"status"].decode()).inc()
        started, finished = fields.get(b"started_at"), fields.get(b"finished_at")
        if started is not None and finished is not None:
            metrics.run_time(task).observe(float(finished) - float(started))
    return transition
