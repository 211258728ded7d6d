"""The Ray cluster: one place that imports Ray, finds the cluster and says what went wrong.

The address comes from the caller, then ``RAY_ADDRESS``; with neither, a local Ray instance is
started in this process (and kept for later calls). Nothing here schedules work: Ray does.
"""

from __future__ import annotations

import os
import threading
from types import ModuleType

from ..errors import InvalidArgumentError, JammiError, MissingPackageError

INSTALL_HINT = "install the extra with: pip install 'jammi-sql[ray]'"
_LOCK = threading.Lock()


class ClusterError(JammiError, ConnectionError):
    """The Ray cluster could not be reached or lost a worker."""


def require_ray() -> ModuleType:
    """``ray`` itself, or a ``jammi:`` error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise MissingPackageError(
            f"engine 'ray' needs Ray, which is not installed; {INSTALL_HINT}"
        ) from None
    return ray


def connect(address: str | None = None) -> ModuleType:
    """Ray, initialised against ``address`` (or ``RAY_ADDRESS``, or a local instance)."""
    ray = require_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    with _LOCK:
        if ray.is_initialized():
            return ray
        kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            if address is None:
                ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
            else:
                ray.init(address=address, **kwargs)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError ...
            where = f"at '{address}'" if address else "locally"
            raise ClusterError(
                f"cannot reach a Ray cluster {where} ({type(exc).__name__}: {exc}); check "
                "ray_address / RAY_ADDRESS (e.g. 'ray://head:10001' or 'auto'), or leave both "
                "unset to start a local instance"
            ) from None
    return ray


def cpus() -> int:
    """CPUs the connected cluster has in all."""
    ray = require_ray()
    return int(ray.cluster_resources().get("CPU", 0))


def reachable(address: str | None = None, timeout_s: float = 3.0) -> None:
    """Refuse at once an address nothing answers at (``ray.init`` would retry for minutes).

    ``address`` (or ``RAY_ADDRESS``) of the form ``[ray://]host:port`` is probed with one TCP
    connection; 'auto', 'local' and no address at all are left to Ray.
    """
    import socket

    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None or address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as exc:
        raise ClusterError(
            f"cannot reach a Ray cluster at '{address}' ({type(exc).__name__}: {exc}); check "
            "ray_address / RAY_ADDRESS (e.g. 'ray://head:10001' or 'auto'), or leave both unset "
            "to start a local instance"
        ) from None


def slots(workers: int) -> bool:
    """Connect, and refuse more workers than the cluster can hold at once; returns whether
    they get a GPU each (when the cluster has one for every worker), else a CPU each."""
    try:
        require_ray()
    except MissingPackageError:
        raise MissingPackageError(
            f"config workers = {workers} trains on Ray Train, and Ray is not installed; "
            f"{INSTALL_HINT}, or leave workers at 1"
        ) from None
    reachable()
    ray = connect()
    resources = ray.cluster_resources()
    gpus, cpus_ = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if gpus >= workers:
        return True
    if cpus_ >= workers:
        return False
    raise InvalidArgumentError(
        f"config workers = {workers} is more than the Ray cluster has ({cpus_} CPUs, {gpus} "
        f"GPUs; a worker takes one of either); use 'workers': {max(cpus_, gpus, 1)} at most, or "
        "add nodes to the cluster"
    )
