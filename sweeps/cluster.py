"""Ray: start a local instance or join a cluster, and the resources each trial asks for."""

from __future__ import annotations

import logging
import os
import socket

from sweeps.config import ConfigError
from sweeps.schema import RaySection

TRAIN_DRIVER_RESOURCES = {"cpu": 0, "gpu": 0, "memory": 2**20}
"""What a multi-worker trial's own process reserves: no CPU, which its workers need whole (Tune needs a non-empty
request: one MiB of Ray's memory resource)."""
_TRIAL_ENV = {"RAY_CHDIR_TO_TRIAL_DIR": "0"}  # trials keep the driver's working directory (absolute paths anyway)


def connect_ray(ray_section: RaySection, verbose: bool) -> dict[str, float]:
    """Start Ray locally (``ray.address`` null and no RAY_ADDRESS) or join a cluster; check GPUs.

    Returns the cluster's resources. A request for GPUs the cluster does not have is a
    ConfigError, unless ``ray.allow_cpu_fallback`` is set, in which case trials run on CPU.
    """
    import ray

    os.environ.update(_TRIAL_ENV)
    # one checkpoint per pruning iteration is by design: silence Tune's "snapshotting too often" warning
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    address = ray_section.address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        resources = ray.cluster_resources()
    else:
        if address:
            check_address(address)
        quiet = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.ERROR}
        try:
            if address:
                ray.init(address=address, runtime_env={"env_vars": dict(_TRIAL_ENV)}, **quiet)
            else:  # its workers inherit _TRIAL_ENV from this process; a runtime_env would cost fresh workers
                # "local": a new instance, never the cluster an earlier `ray start` left its address for (a
                # stale address, once that cluster is gone, made ray.init fail)
                ray.init(
                    address="local",
                    num_cpus=ray_section.num_cpus,
                    num_gpus=ray_section.num_gpus,
                    include_dashboard=False,
                    **quiet,
                )
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ConfigError(
                f"ray.address={address!r} could not be reached ({str(err).splitlines()[0]}); start the cluster "
                "with `ray start --head`, give its host:port, or use ray.address=null to start Ray locally."
            ) from None
        resources = ray.cluster_resources()
    _check_resources(ray_section, resources)
    return resources


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


def check_address(address: str, timeout: float = 5.0) -> None:
    """A ``host:port`` (or ``ray://host:port``) Ray address must accept a TCP connection within ``timeout``.

    ``ray.init`` itself waits many minutes for an address nobody listens on.
    """
    if address == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"ray.address={address!r} is not allowed; use host:port of a running head node (e.g. 10.0.0.5:6379), "
            "ray://host:10001, auto, or null to start Ray locally."
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConfigError(
            f"ray.address={address!r} could not be reached ({err.strerror or err}); start the cluster with "
            "`ray start --head`, give its host:port, or use ray.address=null to start Ray locally."
        ) from None


def _check_resources(ray_section: RaySection, resources: dict[str, float]) -> None:
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
    workers = ray_section.workers_per_trial
    if workers > 1:  # what the trial's workers reserve together
        wanted = {"gpus": workers * ray_section.gpus_per_worker, "cpus": workers * ray_section.cpus_per_worker}
        keys = {kind: f"ray.workers_per_trial={workers} x ray.{kind}_per_worker" for kind in ("gpus", "cpus")}
    else:
        wanted = {"gpus": ray_section.gpus_per_trial, "cpus": ray_section.cpus_per_trial}
        keys = {kind: f"ray.{kind}_per_trial" for kind in ("gpus", "cpus")}
    if wanted["gpus"] > gpus and not (gpus == 0 and ray_section.allow_cpu_fallback):
        raise ConfigError(
            f"{keys['gpus']}={wanted['gpus']:g} GPUs but the Ray cluster has {gpus:g}; ask for fewer, set them to 0 "
            "to run on CPU, or ray.allow_cpu_fallback=true to run on CPU when no GPU exists."
        )
    if wanted["cpus"] > cpus:
        raise ConfigError(
            f"{keys['cpus']}={wanted['cpus']:g} CPUs but the Ray cluster has {cpus:g}: one trial could never be "
            "placed; ask for fewer."
        )


def trial_resources(ray_section: RaySection, resources: dict[str, float]) -> dict[str, float]:
    """What one trial reserves on a cluster with ``resources`` (from :func:`connect_ray`):
    ``cpus_per_trial`` CPUs and its GPU share (none on a GPU-less fallback). A multi-worker trial's own process
    only starts its Ray Train workers, which reserve their resources themselves."""
    if ray_section.workers_per_trial > 1:
        return dict(TRAIN_DRIVER_RESOURCES)
    gpus = ray_section.gpus_per_trial
    if gpus and resources.get("GPU", 0.0) == 0:
        gpus = 0  # allowed by ray.allow_cpu_fallback (checked in connect_ray)
    return {"cpu": ray_section.cpus_per_trial, "gpu": gpus}
