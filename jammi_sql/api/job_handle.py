"""Job: the Python handle of a fine-tuning job, read fresh from ``jammi.jobs`` each time."""

from __future__ import annotations

from typing import Any

from ..errors import JobStateError, TrainingError


class Job:
    """A fine-tuning job; its fields are read fresh from ``jammi.jobs`` each time."""

    def __init__(self, db: Any, job_id: str):  # db: the Database that started it
        self.db, self.job_id = db, job_id

    def record(self):
        """The job's row of ``jammi.jobs``, as a JobRecord."""
        return self.db.ctx.jobs.get(self.job_id)

    @property
    def status(self) -> str:
        """'queued', 'running', 'succeeded', 'failed', 'cancelled' or 'interrupted'."""
        return self.record().status

    @property
    def progress(self) -> float:
        """The fraction of the job's planned steps done (every trial's, then the refit's),
        0.0 to 1.0; it never goes back."""
        return self.record().progress

    @property
    def model_id(self) -> str | None:
        """The id of the model the job registered once it succeeded, else None."""
        return self.record().model_id

    @property
    def metrics(self) -> dict | None:
        """Base vs fine-tuned validation metrics and what was kept, once it succeeded."""
        return self.record().metrics

    @property
    def error(self) -> str | None:
        """Why the job failed or stopped, else None."""
        return self.record().error

    def wait(self, timeout: float | None = None) -> Job:
        """Block until the job ends; raises with the job's error if it failed."""
        status = self.db.ctx.jobs.wait(self.job_id, timeout)
        if status == "failed":
            raise TrainingError(self.error or f"job '{self.job_id}' failed")
        if status in ("queued", "running") and timeout is not None:
            raise TimeoutError(f"jammi: job '{self.job_id}' is still {status} after {timeout} s")
        if status in ("cancelled", "interrupted"):
            raise JobStateError(
                f"job '{self.job_id}' was {status}"
                + ("; resume_job continues it" if status == "interrupted" else "")
            )
        return self

    def cancel(self) -> str:
        """Stop the job (a queued one never starts); returns its status, 'cancelled'."""
        return self.db.cancel_job(self.job_id)

    def resume(self) -> Job:
        """Continue an interrupted job from its last checkpoint; returns this handle."""
        self.db.resume_job(self.job_id)
        return self

    def __repr__(self) -> str:
        record = self.record()
        return f"<Job {self.job_id} {record.status} {record.progress:.0%}>"
