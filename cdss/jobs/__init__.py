"""Analysis jobs: the state machine (leases, retries, dead letter), the runner, the backends and the pipeline.

See :mod:`cdss.jobs.states` for the transitions, :mod:`cdss.jobs.backend` for ``local`` and
``celery``, and :mod:`cdss.jobs.pipeline` for what one job does.
"""

from cdss.jobs.backend import JobBackend, LocalBackend, create_backend
from cdss.jobs.runner import JobRunner, RunOutcome, RunStatus
from cdss.jobs.states import (
    ClaimedJob,
    JobStateError,
    LeaseLost,
    claim_job,
    claim_next,
    count_jobs,
    extend_lease,
    fail_job,
    finish_job,
    reconcile_jobs,
    rerun_job,
)

__all__ = [
    "ClaimedJob",
    "JobBackend",
    "JobRunner",
    "JobStateError",
    "LeaseLost",
    "LocalBackend",
    "RunOutcome",
    "RunStatus",
    "claim_job",
    "claim_next",
    "count_jobs",
    "create_backend",
    "extend_lease",
    "fail_job",
    "finish_job",
    "reconcile_jobs",
    "rerun_job",
]
