"""JobRunner: submit, worker, progress, cancel, resume, delete.

``submit`` validates everything on the caller's thread and writes a ``queued`` row only
when all is well. A worker thread with its own DuckDB cursor then trains, one job at a
time by default, writing progress to ``jammi.jobs`` and ``jammi.job_metrics``; those writes
commit on their own, so any client sees them while the job runs.

A job lives only in the process that runs it. Jobs a gone process left queued or running are
marked ``interrupted`` when a database opens (``Catalog.mark_interrupted``); at interpreter
exit or on close, ``shutdown`` marks this process's unfinished jobs ``interrupted`` (a running
one keeps its checkpoint); ``resume`` continues either kind.

A job whose config has ``workers`` above 1 trains on Ray Train (``training.distributed``): submit
also checks that Ray is installed and the cluster reachable and big enough, and a lost worker
(``ClusterError``) leaves the job ``interrupted`` with its checkpoint, for ``resume``.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .. import progress
from ..artifacts import layout as artifacts
from ..catalog.models import ModelRef, ModelRegistry, hidden_size
from ..catalog.tables import GONE, UNFINISHED, Catalog, JobRecord, ModelRecord
from ..config import (
    FineTuneConfig,
    adapter_type_for,
    check_for_shape,
    choose_shape,
    normalize_method,
    normalize_task,
)
from ..data.checks import check_not_text_scores, check_rows, data_kind, read_rows
from ..data.sources import get_source
from ..errors import InvalidArgumentError, JammiError, JobStateError, NotFoundError
from ..scale.cluster import ClusterError

FINAL = ("succeeded", "failed", "cancelled")
POLL_S = 0.5  # how often wait_job refreshes the progress it shows
PROGRESS_STEPS = 1000

# job id -> the JobRunner (connection) running it: jobs queued or running in this process. A
# new connection's Context leaves them alone (Catalog.mark_interrupted), and cancel_job and
# wait_job on another connection reach them through it.
LIVE_JOBS: dict[str, JobRunner] = {}
_LIVE = LIVE_JOBS


@dataclass
class _Plan:
    """A validated job, ready to run."""

    job_id: str
    resume: bool = False


class JobRunner:
    def __init__(
        self, catalog: Catalog, models: ModelRegistry, home: Path, max_concurrent: int = 1
    ):
        self.catalog = catalog  # its own cursor
        self.models = models
        self.home = home
        self._queue: queue.Queue[_Plan | None] = queue.Queue()
        self._stop_flags: dict[str, threading.Event] = {}
        self._done: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._shutdown = False
        self._cancelled: set[str] = set()  # stopped by cancel_job, not by closing the database
        # job id -> the (progress, epoch, step, total_steps) its row shows, which never go back
        self._shown: dict[str, tuple[float, int, int, int]] = {}
        self._workers = [
            threading.Thread(target=self._work, name=f"jammi-job-worker-{i}", daemon=True)
            for i in range(max(1, max_concurrent))
        ]
        for worker in self._workers:
            worker.start()

    # ---- submitting ---------------------------------------------------------------
    def submit(
        self,
        source: str,
        base_model: str,
        columns: list[str],
        method: str,
        task: str,
        config: FineTuneConfig,
    ) -> str:
        """Validate at once; on success write a queued job and return its id."""
        from ..training.dataset import resolve_loss

        if method is not None:
            method = normalize_method(method)
        task = normalize_task(task)
        if method == "full" and config.target_modules:
            raise InvalidArgumentError(
                "target_modules only apply to method 'lora'; drop them for method 'full'"
            )
        src = get_source(self.catalog, source)
        kind = data_kind(src, list(columns or []))
        method, config, shape = choose_shape(method, config, kind)
        if kind == "triplets":
            check_not_text_scores(self.catalog, src, list(columns), config.embedding_loss)
        loss = resolve_loss(kind, config.embedding_loss)
        ref = self._base_model(base_model)
        check_for_shape(config, adapter_type_for(method, config), hidden_size(ref.folder), kind)
        if config.target_modules:
            from ..shapes.lora import check_targets

            check_targets(
                ref.folder, config.target_modules, config.layers_to_transform, config.rank_pattern
            )
        check_rows(self.catalog, src, list(columns), kind, config)
        if config.workers > 1:  # Ray installed, the cluster reachable and big enough
            from ..scale.cluster import slots

            slots(config.workers)
        job_id = uuid.uuid4().hex[:12]
        model_id = config.model_name or f"{source}-{ref.model_id.rsplit('/', 1)[-1]}-{job_id[:6]}"
        if self.catalog.get_model(model_id) is not None:
            raise InvalidArgumentError(
                f"a model named '{model_id}' already exists; pass another model_name"
            )
        stored = config.replace(model_name=model_id).to_dict()
        record = JobRecord(
            job_id,
            "queued",
            source,
            ref.model_id,
            method,
            task,
            list(columns),
            loss,
            stored,
            metrics={"shape": shape},
        )
        self.catalog.add_job(record)
        self._enqueue(_Plan(job_id))
        return job_id

    def _base_model(self, base_model: str) -> ModelRef:
        ref = self.models.resolve(base_model)
        if ref.adapter_folder is not None:
            record = self.catalog.get_model(ref.model_id)
            raise InvalidArgumentError(
                f"'{ref.model_id}' is a LoRA fine-tune of '{record.base_model_id if record else '?'}'; "
                "fine-tune its base model, or a model trained with method := 'full'"
            )
        return ref

    # ---- controlling --------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord:
        if not isinstance(job_id, str) or not job_id.strip():
            raise InvalidArgumentError(
                "a job id is required; SELECT job_id, status FROM jammi.jobs lists them"
            )
        job = self.catalog.get_job(job_id)
        if job is None:
            raise NotFoundError(
                f"unknown job '{job_id}'; SELECT job_id, status FROM jammi.jobs lists them"
            )
        return job

    def wait(self, job_id: str, timeout: float | None = None) -> str:
        job = self.get(job_id)
        if job.status in FINAL or job.status == "interrupted":
            return job.status
        if (owner := _LIVE.get(job_id, self)) is not self:  # another connection's runner
            return owner.wait(job_id, timeout)
        done = self._done_event(job_id)
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0)
        # Mirror the job's progress where a front end (the shell's progress bar) can see it.
        with progress.start(
            f"training {job.model_id or job_id}", PROGRESS_STEPS, counted=False
        ) as task:
            while not done.wait(
                POLL_S if deadline is None else min(POLL_S, max(deadline - time.monotonic(), 0))
            ):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                task.update(int(self.get(job_id).progress * PROGRESS_STEPS))
        return self.get(job_id).status

    def cancel(self, job_id: str, wait_s: float = 30.0) -> str:
        job = self.get(job_id)
        if job.status in FINAL:
            raise JobStateError(
                f"job '{job_id}' is already {job.status}; only queued or running jobs can be cancelled"
            )
        if job.status == "interrupted":
            self._finish(job_id, "cancelled")
            artifacts.remove_job_files(self.home, job_id)
            return "cancelled"
        if (owner := _LIVE.get(job_id, self)) is not self:
            return owner.cancel(job_id, wait_s)
        self._cancelled.add(job_id)
        self._stop_event(job_id).set()
        if job.status == "queued":  # not started: nothing to wait for
            self._finish(job_id, "cancelled")
            self._done_event(job_id).set()
            return "cancelled"
        self._done_event(job_id).wait(wait_s)
        return self.get(job_id).status

    def resume(self, job_id: str) -> str:
        job = self.get(job_id)
        if job.status != "interrupted":
            raise JobStateError(
                f"job '{job_id}' is {job.status}; only an interrupted job can be resumed"
                + (
                    " (it is still going: wait_job waits for it)"
                    if job.status in ("queued", "running")
                    else ""
                )
            )
        self._done.pop(job_id, None)
        self._stop_flags.pop(job_id, None)
        self.catalog.update_job(job_id, status="queued", error=None, finished_at=None)
        self._enqueue(_Plan(job_id, resume=True))
        return job_id

    def delete(self, job_id: str) -> str:
        """Remove an ended job's rows and work files; the model it produced stays."""
        job = self.get(job_id)
        if job.status in UNFINISHED:
            raise JobStateError(
                f"job '{job_id}' is {job.status}; stop it first with cancel_job('{job_id}'), "
                "then delete_job"
            )
        # A worker skips a cancelled job it dequeues; another ended job may be winding down.
        skipped = job.status == "cancelled"
        deadline = time.monotonic() + 5
        while job_id in _LIVE and not skipped and time.monotonic() < deadline:
            time.sleep(0.05)
        if job_id in _LIVE and not skipped:
            raise JobStateError(
                f"job '{job_id}' is {job.status} but its worker is still winding down; "
                "call delete_job again in a moment"
            )
        self.catalog.delete_job(job_id)
        artifacts.remove_job_files(self.home, job_id)
        kept = (
            f"; its model '{job.model_id}' stays (remove_model removes it)" if job.model_id else ""
        )
        return f"job '{job_id}' deleted{kept}"

    def unfinished(self) -> list[str]:
        """Ids of the jobs this runner has queued or running."""
        with self._lock:
            mine = [j for j, done in self._done.items() if not done.is_set()]
        return [j for j in mine if j in _LIVE]

    def shutdown(self) -> None:
        """Stop workers; a running job keeps its checkpoint and shows as interrupted, and
        so does a queued one (resume_job starts it)."""
        if self._shutdown:
            return
        self._shutdown = True
        with self._lock:
            flags = list(self._stop_flags.values())
        for flag in flags:
            flag.set()
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join(timeout=60)

    # ---- the worker ---------------------------------------------------------------
    def _enqueue(self, plan: _Plan) -> None:
        _LIVE[plan.job_id] = self
        self._done_event(plan.job_id)
        self._stop_event(plan.job_id)
        self._queue.put(plan)

    def _done_event(self, job_id: str) -> threading.Event:
        with self._lock:
            return self._done.setdefault(job_id, threading.Event())

    def _stop_event(self, job_id: str) -> threading.Event:
        with self._lock:
            return self._stop_flags.setdefault(job_id, threading.Event())

    def _work(self) -> None:
        while True:
            plan = self._queue.get()
            if plan is None:
                return
            stop = self._stop_event(plan.job_id)
            try:
                row = self.catalog.get_job(plan.job_id)
                if plan.job_id in self._cancelled or row is None or row.status == "cancelled":
                    pass  # cancel_job (here or through another connection) marked it, or deleted
                elif self._shutdown:
                    self._finish(plan.job_id, "interrupted", error=GONE)
                else:
                    self._run(plan, stop)
            finally:
                _LIVE.pop(plan.job_id, None)
                self._shown.pop(plan.job_id, None)
                self._done_event(plan.job_id).set()

    def _finish(self, job_id: str, status: str, **values) -> None:
        self.catalog.update_job(
            job_id, status=status, finished_at=_now() if status in FINAL else None, **values
        )

    def _train(self, plan: _Plan, stop: threading.Event) -> None:
        from ..training.dataset import make_training_set
        from ..training.train import Cancelled, run_training

        job = self.get(plan.job_id)
        cfg = FineTuneConfig.from_mapping(job.config)
        self.catalog.update_job(
            job.job_id, status="running", started_at=job.started_at or _now(), error=None
        )
        was = (job.progress or 0.0, job.epoch or 0, job.step or 0, job.total_steps or 0)
        self._shown[job.job_id] = was  # a resumed job's row: what it showed
        try:
            src = get_source(self.catalog, job.source)
            kind = data_kind(src, job.columns)
            data = make_training_set(kind, read_rows(self.catalog, src, job.columns))
            base = self._base_model(job.base_model)
            artifacts.remove_job_files(self.home, job.job_id, keep_checkpoint=True)
            if cfg.workers > 1:  # the same loop on Ray Train workers
                from ..training.distributed import run_distributed
            result = (run_distributed if cfg.workers > 1 else run_training)(
                base.folder,
                data,
                cfg,
                job.method,
                work_dir=artifacts.job_dir(self.home, job.job_id),
                output_dir=artifacts.job_output_dir(self.home, job.job_id),
                on_progress=lambda p: self._record_progress(job.job_id, p),
                should_stop=stop.is_set,
                resume=plan.resume,
                base_model_id=base.model_id,
            )
            self._publish(job, cfg, base, result)
        except Cancelled:
            self._stopped(job.job_id)
        except ClusterError as e:  # Ray lost a worker, or cannot be reached: resume later
            artifacts.remove_job_files(self.home, job.job_id, keep_checkpoint=True)
            self._finish(job.job_id, "interrupted", error=str(e))
        except Exception:
            if not self._shutdown:
                raise
            # the process is exiting: whatever broke (a thread pool already shut down, an
            # import refused) broke because of that, so the job is interrupted, not failed
            self._stopped(job.job_id)

    def _stopped(self, job_id: str) -> None:
        """A job stopped by cancel_job, or by the database closing (it can be resumed)."""
        cancelled = job_id in self._cancelled
        artifacts.remove_job_files(self.home, job_id, keep_checkpoint=not cancelled)
        if cancelled:
            self._finish(job_id, "cancelled")
        else:
            self._finish(
                job_id,
                "interrupted",
                error="the database was closed while this job ran; resume_job continues it",
            )

    def _run(self, plan: _Plan, stop: threading.Event) -> None:
        try:
            self._train(plan, stop)
        except JammiError as e:
            self._fail(plan.job_id, str(e))
        except Exception as e:  # a bug or an environment problem: say what it was
            self._fail(plan.job_id, f"jammi: training failed: {type(e).__name__}: {e}")

    def _record_progress(self, job_id: str, p) -> None:
        """Write a run's report to the job's row. Progress, epoch, step and total_steps never
        go back: the run counts through its whole plan (training.trial.Progress), and a
        resumed run, which starts again from its last checkpoint, shows what was shown until
        it passes it."""
        was = self._shown.get(job_id, (0.0, 0, 0, 0))
        total = max(p.total_steps, was[3], 1)
        step, epoch = max(p.step, was[2]), max(p.epoch, was[1])
        progress = max(min(step / total, 1.0), was[0])
        self._shown[job_id] = (progress, epoch, step, total)
        self.catalog.update_job(
            job_id,
            progress=progress,
            epoch=epoch,
            step=step,
            total_steps=total,
            train_loss=_finite(p.train_loss),
            val_loss=_finite(p.val_loss),
            best_val_loss=_finite(p.best_val_loss),
        )
        logs = [(s, n, v) for s, n, v in p.logs if _finite(v) is not None]
        self.catalog.log_metrics(job_id, p.step, p.epoch, logs)
        for trial, epoch, name, value in p.trial_logs:  # step = the trial's number
            self.catalog.log_metrics(job_id, trial, epoch, [("trial", name, value)])

    def _publish(self, job: JobRecord, cfg: FineTuneConfig, base: ModelRef, result) -> None:
        """Move the artifact into models/, register the model, mark the job succeeded."""
        model_id = cfg.model_name or job.job_id
        target = artifacts.publish(self.home, job.job_id, model_id)
        metrics = {**(job.metrics or {}), **_jsonable(result.metrics)}  # the shape's choice first
        self.catalog.add_model(
            ModelRecord(
                model_id,
                "fine_tuned",
                "job",
                base_model_id=base.model_id,
                adapter_type=result.adapter_type,
                task=job.task,
                dimensions=result.dimensions,
                artifact_path=str(target),
                job_id=job.job_id,
                metrics=metrics,
            )
        )
        self._finish(job.job_id, "succeeded", progress=1.0, model_id=model_id, metrics=metrics)
        artifacts.remove_job_files(self.home, job.job_id)

    def _fail(self, job_id: str, message: str) -> None:
        artifacts.remove_job_files(self.home, job_id)
        self._finish(job_id, "failed", error=message)


_now = datetime.now


def _finite(value):
    value = None if value is None else float(value)
    return value if value is not None and math.isfinite(value) else None


def _jsonable(value):
    return json.loads(
        json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    )
