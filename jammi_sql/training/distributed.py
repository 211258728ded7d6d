"""Fine-tuning on Ray Train: the loop of :mod:`~jammi_sql.training.train`, run by ``workers``
processes with DDP (``ray.train.torch.TorchTrainer``; gloo on CPUs, NCCL on GPUs).

The job's thread in this process is Ray's driver. It ships the base model's files and the rows
to the workers, starts the trainer, and polls a small actor, the channel, for what rank 0 sends:
progress (to the job's row), checkpoints (written here, in jammi's format, so cancel and resume
work as for a local job) and, at the end, the kept weights, which it writes here as the artifact
with the code a local job uses. ``cancel_job`` sets a flag on the channel; the workers agree at
each batch whether to stop, so they stop at the same one.

Each worker runs :func:`~jammi_sql.training.train.train` with a :class:`Group`. The batch of
``batch_size`` rows is cut into one share per worker; each embeds its share, the shares'
embeddings are gathered with their gradients (``torch.distributed.nn.functional.all_gather``)
and every worker computes the loss of the whole batch, in-batch negatives across all of it.
The gradient reaching a share is the sum over the workers' (equal) losses, ``world`` times its
part of the batch's gradient, and DDP averages over the workers: each step is the one-process
step at the same batch. Validation runs whole on every worker, so all take the same decisions.
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..config import FineTuneConfig
from ..errors import InvalidArgumentError, JammiError
from ..scale import cluster
from ..scale.cluster import ClusterError
from . import checkpoint
from .dataset import TrainingSet
from .trainee import Cancelled, Trainee
from .trial import Progress

POLL_S = 0.2  # how often the driver reads the channel, and rank 0 the cancel flag
LOST = (
    "a Ray Train worker was lost ({what}); the job keeps its last checkpoint, and resume_job "
    "continues it"
)


class _Channel:
    """The actor between the driver and rank 0: messages one way, the cancel flag the other."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, object]] = []
        self.stopping = False

    def put(self, kind: str, value: object) -> None:
        self.messages.append((kind, value))

    def take(self) -> list[tuple[str, object]]:
        out, self.messages = self.messages, []
        return out

    def stop(self) -> None:
        self.stopping = True

    def stopped(self) -> bool:
        return self.stopping


class Group:
    """One worker's place in the run, and the collectives the loop needs."""

    def __init__(self, rank: int, world: int, channel, device: torch.device):
        self.rank, self.world, self.channel, self.device = rank, world, channel, device
        self._asked, self._stop = 0.0, False

    def share(self, rows: np.ndarray) -> np.ndarray:
        """This worker's rows of a batch: contiguous shares, the first ones one row longer."""
        return np.array_split(rows, self.world)[self.rank]

    def gather(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """Every worker's ``local`` (its share's rows, ...) in batch order, with gradients."""
        from torch.distributed.nn.functional import all_gather

        sizes = [len(s) for s in np.array_split(np.arange(n), self.world)]
        pad = sizes[0] - len(local)  # all_gather takes equal shapes
        if pad:
            local = torch.cat([local, local.new_zeros((pad, *local.shape[1:]))])
        parts = all_gather(local.contiguous())
        return torch.cat([part[:k] for part, k in zip(parts, sizes, strict=True)])

    def wrap(self, trainee: Trainee) -> None:
        """Training forwards run through DDP, which averages the gradients over the workers."""
        from torch.nn.parallel import DistributedDataParallel

        encoder = trainee.encoder
        trainee.module = DistributedDataParallel(
            encoder,
            device_ids=[encoder.device.index] if encoder.device.type == "cuda" else None,
            # method 'full' trains weights the embedding never uses (BERT's pooler)
            find_unused_parameters=trainee.shape.trains_encoder,
            broadcast_buffers=False,  # no buffer changes in training
        )

    def should_stop(self) -> bool:
        """Whether cancel_job (or closing the database) asked to stop: rank 0 reads the flag
        and every worker gets its answer, so all stop at the same batch."""
        import torch.distributed as dist

        if self.rank == 0 and not self._stop and time.monotonic() - self._asked > POLL_S:
            import ray

            self._stop, self._asked = ray.get(self.channel.stopped.remote()), time.monotonic()
        flag = torch.tensor([int(self._stop)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def objects(self, value) -> list:
        """``value`` from every worker, by rank."""
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, value)
        return out


# ---- the workers ---------------------------------------------------------------------------
def _worker(cfg: dict) -> None:
    """One Ray Train worker: the same loop as a local job, on its share of each batch."""
    import ray
    import ray.train
    from ray.train.torch import get_device

    from .train import Setup, train

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    channel, device = cfg["channel"], get_device()
    group = Group(rank, world, channel, device)
    saved = ray.get(cfg["saved"]) if cfg["saved"] is not None else None

    def write(saved: dict) -> None:  # every worker's RNG, so each resumes its own stream
        rngs = group.objects(saved["rng"])
        if rank == 0:
            channel.put.remote("checkpoint", {**saved, "rngs": rngs})

    def report(p: Progress) -> None:
        if rank == 0:
            channel.put.remote("progress", p)

    with tempfile.TemporaryDirectory(prefix="jammi-base-") as tmp:
        folder = _unpack(ray.get(cfg["model"]), Path(tmp))
        data, config = cfg["data"], cfg["config"]
        setup = Setup(folder, data, config, cfg["method"], device, group.should_stop, group)
        outcome = train(setup, data, config, saved, write, report)
    if rank == 0:
        ray.get(channel.put.remote("done", outcome))


def _pack(folder: Path) -> dict[str, bytes]:
    """The base model's files, to ship to workers that may not share this file system."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _unpack(files: dict[str, bytes], into: Path) -> Path:
    for name, content in files.items():
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        (into / name).write_bytes(content)
    return into


# ---- the driver ----------------------------------------------------------------------------
def run_distributed(
    base_folder: Path,
    data: TrainingSet,
    config: FineTuneConfig,
    method: str,
    *,
    work_dir: Path,
    output_dir: Path,
    on_progress: Callable[[Progress], None],
    should_stop: Callable[[], bool],
    resume: bool = False,
    base_model_id: str | None = None,
    device=None,
):
    """:func:`~jammi_sql.training.train.run_training` on ``config.workers`` Ray Train workers
    (``device`` is Ray's choice: a GPU each where the cluster has enough, else a CPU each).

    Raises :class:`Cancelled` when ``should_stop()`` turns true, ``ClusterError`` when the
    cluster cannot be reached or loses a worker (the checkpoint stays for a resume), and what
    a worker raised otherwise (a diverging loss is a ``TrainingError`` as in one process).
    """
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from .train import fingerprint, save_model

    base_folder, work_dir, output_dir = Path(base_folder), Path(work_dir), Path(output_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    try:  # checked at submit too; a resumed job may find the cluster smaller
        use_gpu = cluster.slots(config.workers)
    except InvalidArgumentError as exc:
        raise ClusterError(str(exc)) from None
    ray = cluster.require_ray()
    saved = checkpoint.read(work_dir, fingerprint(data, config, method)) if resume else None
    channel = ray.remote(num_cpus=0)(_Channel).remote()
    trainer = TorchTrainer(
        _worker,
        train_loop_config={
            "channel": channel,
            "model": ray.put(_pack(base_folder)),
            "saved": None if saved is None else ray.put(saved),
            "data": data,
            "config": config,
            "method": method,
        },
        scaling_config=ScalingConfig(num_workers=config.workers, use_gpu=use_gpu),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=f"jammi-{uuid.uuid4().hex[:8]}",
            storage_path=str(work_dir / "ray"),
            failure_config=FailureConfig(max_failures=0),  # jammi resumes from its checkpoint
        ),
    )
    fitted: dict = {}

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - handed to the job's thread below
            fitted["error"] = exc

    thread = threading.Thread(target=fit, name="jammi-ray-train", daemon=True)
    thread.start()
    done, stopping = None, False
    try:
        while True:
            thread.join(POLL_S)
            ended = not thread.is_alive()
            if not stopping and should_stop():
                channel.stop.remote()
                stopping = True
            for kind, value in ray.get(channel.take.remote()):
                if kind == "progress":
                    on_progress(value)
                elif kind == "checkpoint":
                    checkpoint.write(work_dir, value)
                else:
                    done = value
            if ended:
                break
    finally:
        ray.kill(channel)
    if "error" in fitted:
        raise _why(fitted["error"]) from None
    if done is None:
        raise ClusterError(LOST.format(what="the workers ended without a result"))
    best, weights, result = done
    # ---- the artifact, written here by the code a local job uses
    from ..inference.encoder import Encoder

    encoder = Encoder.from_folder(base_folder, torch.device("cpu"))
    trainee = Trainee(encoder, result.adapter_type, best, [], lambda: False)
    save_model(trainee, best, weights, output_dir, base_model_id or str(base_folder), base_folder)
    return dataclasses.replace(result, output_dir=output_dir)


def _why(error: BaseException) -> BaseException:
    """What a failed ``fit`` means for the job: cancelled, a worker lost (the job can resume),
    or the error a worker raised."""
    failures = list((getattr(error, "worker_failures", None) or {}).values())
    for exc in failures:
        if isinstance(exc, Cancelled):
            return exc
    for exc in failures:  # Ray's own errors: a process, a node or a health check gone
        if type(exc).__module__.split(".")[0] == "ray" and "User" not in type(exc).__name__:
            return ClusterError(LOST.format(what=f"{type(exc).__name__}: {_first_line(exc)}"))
    for exc in failures:
        if isinstance(exc, JammiError):
            return exc
    if failures:
        return failures[0]
    return ClusterError(LOST.format(what=f"{type(error).__name__}: {_first_line(error)}"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
