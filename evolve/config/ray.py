"""Where and how trials run (``RayConfig``): the Ray cluster, resources and DDP ranks per trial, and
early stopping. Every field carries its command-line flag (``evolve.config.fields``).

``nproc_for`` is the one rule for how many DDP ranks a trial has: one per GPU from 2 GPUs up, else
``--workers-per-trial`` CPU processes.
"""
from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import Any, Optional

from evolve.config.fields import check_fields, setting
from evolve.errors import ConfigError

EARLY_STOP = ("none", "asha")


def nproc_for(gpus_per_trial: float, workers_per_trial: Optional[int]) -> int:
    """Number of DDP ranks of one trial: one per GPU from 2 GPUs up, else ``workers_per_trial`` or 1."""
    if isinstance(gpus_per_trial, bool) or not isinstance(gpus_per_trial, (int, float)) \
            or not math.isfinite(gpus_per_trial) or gpus_per_trial < 0:
        raise ConfigError(f"--gpus-per-trial {gpus_per_trial!r}: must be a number >= 0")
    if workers_per_trial is not None and (isinstance(workers_per_trial, bool)
                                          or not isinstance(workers_per_trial, int) or workers_per_trial < 1):
        raise ConfigError(f"--workers-per-trial {workers_per_trial!r}: must be a whole number >= 1")
    if gpus_per_trial > 1 and gpus_per_trial != int(gpus_per_trial):
        raise ConfigError(f"--gpus-per-trial {gpus_per_trial!r}: above 1 it must be a whole number of GPUs "
                          "(one DDP rank per GPU)")
    if gpus_per_trial >= 2:
        n = int(gpus_per_trial)
        if workers_per_trial is not None and workers_per_trial != n:
            raise ConfigError(f"--workers-per-trial {workers_per_trial} with --gpus-per-trial {n}: a GPU "
                              f"trial runs one DDP rank per GPU ({n}); drop --workers-per-trial")
        return n
    n = workers_per_trial or 1
    if n > 1 and gpus_per_trial > 0:
        raise ConfigError(f"--workers-per-trial {n} with --gpus-per-trial {gpus_per_trial:g}: DDP ranks on "
                          f"GPUs need one GPU each; use --gpus-per-trial {n}")
    return n


@dataclass
class RayConfig:
    """Where and how trials run. ``address`` None (or empty) starts an embedded local Ray sized to the
    machine."""

    address: Optional[str] = setting(None, "--address", "Ray cluster to join: auto or host:port (default: "
                                     "an embedded local Ray)")
    cpus_per_trial: float = setting(1.0, "--cpus-per-trial", "CPUs reserved per trial", parse=float)
    gpus_per_trial: float = setting(0.0, "--gpus-per-trial", "GPUs per trial; fractions pack trials on one "
                                    "GPU", parse=float)
    max_concurrent: Optional[int] = setting(None, "--max-concurrent", "trials running at once (default: as "
                                            "many as the resources allow)", parse=int)
    num_cpus: Optional[int] = setting(None, "--num-cpus", "CPUs of the embedded Ray (default: all of this "
                                      "machine)", parse=int)
    num_gpus: Optional[int] = setting(None, "--num-gpus", "GPUs of the embedded Ray, logical ones allowed "
                                      "(default: those found)", parse=int)
    ray_host: Optional[str] = setting(None, "--ray-host", "where the embedded Ray listens: 127.0.0.1 (the "
                                      "default) admits this machine only; 0.0.0.0 (every interface) or one of "
                                      "this machine's addresses lets other machines join it with 'ray start "
                                      "--address'", metavar="IP")
    storage: Optional[str] = setting(None, "--storage", "where Ray Tune keeps its trial records: a shared "
                                     "folder or a URI such as s3://bucket/path (default: RUN_DIR/ray)",
                                     metavar="PATH|URI")
    workers_per_trial: Optional[int] = setting(None, "--workers-per-trial", "run each trial as a DDP job of "
                                               "N CPU processes (gloo); with --gpus-per-trial 2 or more a "
                                               "trial has one process per GPU (default: 1 process)",
                                               parse=int)
    trial_timeout: Optional[float] = setting(None, "--trial-timeout", "end a trial running longer than this "
                                             "and record it failed (reason timeout); 0: never (default: "
                                             "max(600, 4 x the median duration of the trials finished so "
                                             "far), none before the first has finished)", parse=float, low=0,
                                             optional=True, metavar="SECONDS")
    # None: the fidelity decides (evolve.config.fidelity.early_stop): asha under prefix, else none
    early_stop: Optional[str] = setting(None, "--early-stop", "stop hopeless trials: asha compares per-epoch "
                                        "fitness (validates every epoch); a stopped trial is recorded "
                                        "'stopped' (default: asha under --fidelity prefix, else none)",
                                        choices=EARLY_STOP, optional=True)
    # None: decided once the base hyp is known (evolve.config.fidelity.resolve_grace)
    grace_epochs: Optional[int] = setting(None, "--grace-epochs", "with --early-stop asha: epochs every trial "
                                          "runs before it may be stopped (default: under --fidelity prefix "
                                          "the first epoch after the base hyp's warmup, 4 for the shipped "
                                          "hyps; else 1)", parse=int, optional=True)
    reduction_factor: float = setting(3.0, "--reduction-factor", "with --early-stop asha: only 1/F of the "
                                      "trials go on at each rung", parse=float)

    def __post_init__(self) -> None:
        if isinstance(self.address, str) and not self.address.strip():
            self.address = None  # an empty address (--address "", RAY_ADDRESS="") means an embedded Ray

        def bad(flag: str, value: Any, why: str) -> ConfigError:
            return ConfigError(f"--{flag} {value!r}: {why}")

        for flag, value in (("cpus-per-trial", self.cpus_per_trial), ("gpus-per-trial", self.gpus_per_trial)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
                    or value < 0:
                raise bad(flag, value, "must be a number >= 0")
        if self.cpus_per_trial == 0 and self.gpus_per_trial == 0:
            raise bad("cpus-per-trial", self.cpus_per_trial, "a trial needs some CPU or GPU (both are 0)")
        for flag, value, low in (("max-concurrent", self.max_concurrent, 1), ("num-cpus", self.num_cpus, 1),
                                 ("num-gpus", self.num_gpus, 0)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
                raise bad(flag, value, f"must be a whole number >= {low}")
        nproc_for(self.gpus_per_trial, self.workers_per_trial)  # the one check of GPUs and DDP ranks
        if self.early_stop is not None and self.early_stop not in EARLY_STOP:
            raise bad("early-stop", self.early_stop, f"expected one of {', '.join(EARLY_STOP)}")
        grace = self.grace_epochs
        if grace is not None and (isinstance(grace, bool) or not isinstance(grace, int) or grace < 1):
            raise bad("grace-epochs", self.grace_epochs, "must be a whole number >= 1")
        if isinstance(self.reduction_factor, bool) or not isinstance(self.reduction_factor, (int, float)) \
                or not math.isfinite(self.reduction_factor) or self.reduction_factor <= 1:
            raise bad("reduction-factor", self.reduction_factor, "must be a number > 1")
        if self.storage is not None and (not isinstance(self.storage, str) or not self.storage.strip()):
            raise bad("storage", self.storage, "expected a folder or a URI such as s3://bucket/path")
        if self.ray_host is not None:
            try:
                ipaddress.ip_address(self.ray_host)
            except ValueError:
                raise bad("ray-host", self.ray_host, "expected an IP address such as 127.0.0.1 or 0.0.0.0") from None
        check_fields(self)  # what the flags declare (--trial-timeout >= 0); the checks above say more
        if self.address is not None:
            parse_address(self.address)
            if self.num_cpus is not None or self.num_gpus is not None:
                raise bad("address", self.address, "--num-cpus/--num-gpus size an embedded Ray only; "
                          "a cluster's resources are set with 'ray start'")
            if self.ray_host is not None:
                raise bad("address", self.address, "--ray-host sets where an embedded Ray listens; a "
                          "cluster's is set with 'ray start --node-ip-address'")

    @property
    def nproc(self) -> int:
        """DDP ranks of one trial (``nproc_for``)."""
        return nproc_for(self.gpus_per_trial, self.workers_per_trial)


def parse_address(address: Any) -> Optional[tuple[str, int]]:
    """(host, port) of a ``host:port`` address, None for ``auto``; ConfigError for anything else."""
    if not isinstance(address, str) or not address.strip():
        raise ConfigError(f"--address {address!r}: expected 'auto' or 'host:port'")
    address = address.strip()
    if address == "auto":
        return None
    if "://" in address:
        # Under Ray Client, Tune runs its loop on the cluster and results would not reach this driver.
        raise ConfigError(f"--address {address!r}: Ray Client addresses are not supported; run the driver "
                          f"on a cluster node with --address auto or the head's host:port")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--address {address!r}: expected 'auto' or 'host:port'")
    return host, int(port)
