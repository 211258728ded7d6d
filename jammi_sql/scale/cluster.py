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
    global _connected_to
    ray = require_ray()
    given = address
    address = address or os.environ.get("RAY_ADDRESS") or None
    with _LOCK:
        if ray.is_initialized():
            _check_same(ray, given)
            return ray
        where = f"at '{address}'" if address else "locally"
        kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            if address is None:
                ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
            else:
                _probe(address)
                ray.init(address=address, **kwargs)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError ...
            raise ClusterError(
                f"cannot reach a Ray cluster {where} ({type(exc).__name__}: {exc}); check "
                "ray_address / RAY_ADDRESS (e.g. 'ray://head:10001' or 'auto'), or leave both "
                "unset to start a local instance"
            ) from None
        _connected_to = address
    return ray


_connected_to: str | None = None  # the address this process connected with (None: local)


def _check_same(ray: ModuleType, address: str | None) -> None:
    """A process talks to one Ray cluster: an explicit address must be the one it uses."""
    if address is None or address in ("auto", _connected_to):
        return
    try:
        current = ray.get_runtime_context().gcs_address
    except Exception:  # a Ray Client connection has no GCS address here
        current = None
    if address != current:
        raise ClusterError(
            f"this process already uses the Ray cluster at '{current or _connected_to}', and Ray "
            f"lets a process use one cluster; leave ray_address unset to use that one, or run "
            f"the call in a new process to use '{address}'"
        )


def _probe(address: str, timeout: float = 3.0) -> None:
    """Fail fast on a host:port nothing listens at (Ray itself retries for minutes)."""
    import socket

    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or "/" in hostport:
        return  # 'auto', 'local' and the like: Ray finds the cluster
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {host}:{port}: {exc.strerror or exc}") from None


def quiet() -> None:
    """No Ray Data progress bars or execution logs in query output."""
    import logging

    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # failures come back as errors


def cpus() -> int:
    """CPUs the connected cluster has in all."""
    ray = require_ray()
    return int(ray.cluster_resources().get("CPU", 0))


def reachable(address: str | None = None) -> None:
    """Refuse at once an address (or ``RAY_ADDRESS``) nothing answers at, even while this
    process already uses a cluster; 'auto', 'local' and no address are left to Ray."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        return
    try:
        _probe(address)
    except ConnectionError as exc:
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
