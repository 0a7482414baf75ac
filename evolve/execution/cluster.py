"""Ray for one run: started or joined, and checked against the run's resource flags, before anything is
written (``ray_session``).

A refused command must leave no trace, so the driver enters ``ray_session`` before it makes a run folder
or touches a resumed one: a bad ``--address`` or a trial that no node can hold is a ``ConfigError`` then,
not after a checkpoint was written.

Connecting is bounded. Ray's own client retries an address for minutes, and one where something other
than Ray listens (a web server) hangs it for good, so an address is probed first (``check_reachable``): a
TCP connect, then the HTTP/2 preface that Ray's GCS (a gRPC server) must answer with a SETTINGS frame;
anything else within ``PROBE_TIMEOUT_S`` is "no Ray cluster answers there".

On a cluster (``--address``), two failures of separate hosts are caught here rather than left to Ray:

- a node that lacks a data path: before any trial, every node that can run trials is asked whether the
  data YAMLs and the folders they name exist there (``check_paths_on_nodes``); the first missing one is a
  ``ConfigError`` naming the node's address and the path, instead of every trial on that node failing;
- the head lost mid-run: ``head_watch`` probes the head every ``WATCH_INTERVAL_S`` and calls its
  ``on_lost`` once the head has not answered for ``HEAD_LOST_AFTER_S``. Ray's own client would end the
  driver a minute later with status 1 and no word on how to continue.

The embedded Ray listens on the loopback interface only (``loopback_only``) unless ``--ray-host`` opens
it: a local evolution has no use for ports on every interface, and anyone who reaches one can run code.
A local start that fails (no memory, ports or disk for Ray's processes under heavy load) is one line and
exit 3 (``RunStopped``): the command was right, the machine was not ready.
"""
from __future__ import annotations

import gc
import ipaddress
import logging
import os
import socket
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import yaml

from evolve.config.ray import RayConfig, parse_address
from evolve.errors import ConfigError, RunStopped
from evolve.output.console import quiet_ray_startup

LOGGER = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0  # per step (connect, answer): a clear error well within 30 s
# Client connection preface (RFC 9113 3.4) and an empty SETTINGS frame: a gRPC server answers with its own.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
SETTINGS_FRAME = 0x04
WATCH_INTERVAL_S = 5.0
PATHS_TIMEOUT_S = 120.0  # a node starts a Python worker to answer; slow on a loaded machine, not hung
HEAD_LOST_AFTER_S = 20.0  # a busy head may miss a probe or two; Ray's own client gives up after 60 s


def _auto_address() -> Optional[str]:
    """The address ``auto`` stands for (RAY_ADDRESS or this machine's running cluster), if Ray tells."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address("auto")
    except Exception:  # noqa: BLE001 - no cluster found, or another Ray version: ray.init will say
        return None


def check_reachable(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """ConfigError unless a Ray GCS answers at ``address`` (``host:port``, or ``auto`` when Ray knows it)."""
    target = parse_address(address)
    if target is None:
        found = _auto_address()
        target = parse_address(found) if found else None
        if target is None:
            return  # ray.init("auto") fails at once when there is no cluster to find
    try:
        with socket.create_connection(target, timeout=timeout) as sock:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                return  # a TLS GCS expects a TLS hello first; the connect is all that can be checked
            sock.settimeout(timeout)
            sock.sendall(HTTP2_PREFACE)
            answer = sock.recv(9)
    except OSError as exc:
        raise ConfigError(f"--address {address!r}: no Ray cluster answers there ({exc}); start one with "
                          f"'ray start --head' or use --address auto on a cluster node") from exc
    if len(answer) < 4 or answer[3] != SETTINGS_FRAME:
        raise ConfigError(f"--address {address!r}: something listens there but it is not a Ray cluster "
                          f"(it answered {answer[:16]!r}); give the address of a Ray head node "
                          f"('ray start --head' prints it)")


@contextmanager
def loopback_only() -> Iterator[None]:
    """Ray started within listens on 127.0.0.1 only, as Ray itself does on macOS and Windows: with its
    cluster switch off, every Ray process takes the loopback address as the node's and binds there."""
    from ray._private import ray_constants

    if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):  # another Ray version: its own default holds
        LOGGER.warning("this Ray version cannot be kept to 127.0.0.1; it listens where Ray decides")
        yield
        return
    old, old_env = ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR)
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"  # and so do the processes it starts
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old
        if old_env is None:
            os.environ.pop(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, None)
        else:
            os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = old_env


def start_or_join(cfg: RayConfig) -> bool:
    """Start the embedded Ray or join ``cfg.address``; False when Ray was already initialised here."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    host = cfg.ray_host
    if cfg.address is None:
        # "local" starts a new Ray even when a `ray start` cluster is alive on this machine, which
        # ray.init() would otherwise join silently (and refuse num_cpus/num_gpus for).
        kwargs.update(address="local", num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus)
        if host is not None and not ipaddress.ip_address(host).is_unspecified \
                and not ipaddress.ip_address(host).is_loopback:
            kwargs["_node_ip_address"] = host
    else:
        check_reachable(cfg.address)
        kwargs.update(address=cfg.address.strip())
    loopback = cfg.address is None and (host is None or ipaddress.ip_address(host).is_loopback)
    try:
        with quiet_ray_startup(), (loopback_only() if loopback else nullcontext()):
            ray.init(**kwargs)
    except ConnectionError as exc:
        if cfg.address is None:
            raise _start_failed(exc) from exc
        raise ConfigError(f"--address {cfg.address!r}: cannot connect to a Ray cluster: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - Ray fails to start in many ways; each is one line here
        raise _start_failed(exc) if cfg.address is None else ConfigError(
            f"--address {cfg.address!r}: cannot join the Ray cluster: {_first_line(exc)}") from exc
    LOGGER.info("Ray %s: %s", "joined" if cfg.address else "started locally",
                {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")})
    return True


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"


def _start_failed(exc: BaseException) -> RunStopped:
    """The one line that ends a run whose embedded Ray did not start; what Ray had started is shut down."""
    import ray

    try:
        ray.shutdown()
    except Exception:  # noqa: BLE001 - half-started: whatever is left goes with this process
        pass
    message = (f"the local Ray did not start ({_first_line(exc)}); this often passes when the machine is "
               "less loaded (memory, free ports, space in the temp folder); run the same command again")
    LOGGER.error("%s", message)
    return RunStopped(message)


def shutdown() -> None:
    """Shut down the Ray this process started."""
    import ray

    # Tune leaves Ray handles in reference cycles. Collected after shutdown (in whatever thread the
    # collector runs next, such as the plot thread), their finalisers make Ray's core worker end the
    # whole process with status 1; collected now, they are released normally.
    gc.collect()
    ray.shutdown()


def check_resources(cfg: RayConfig) -> None:
    """ConfigError naming the flag unless some live node can hold one trial (its CPUs and GPUs together:
    Ray places a trial's resources on one node)."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    need = {"CPU": float(cfg.cpus_per_trial), "GPU": float(cfg.gpus_per_trial)}
    if any(all(float(res.get(k, 0.0)) + 1e-9 >= v for k, v in need.items() if v > 0) for res in nodes):
        return
    for name, flag in (("CPU", "--cpus-per-trial"), ("GPU", "--gpus-per-trial")):
        most = max((float(res.get(name, 0.0)) for res in nodes), default=0.0)
        if need[name] > 0 and most + 1e-9 < need[name]:
            where = "the local Ray has" if cfg.address is None else "the largest node of the cluster has"
            raise ConfigError(f"{flag} {need[name]:g}: {where} only {most:g} {name}s")
    raise ConfigError(f"--cpus-per-trial {need['CPU']:g} with --gpus-per-trial {need['GPU']:g}: no node of "
                      f"the Ray cluster has both")


def data_paths(data: str | None) -> list[str]:
    """The paths trials read for ``--data``: each data YAML and the folders or lists it names (``path``,
    ``train``, ``val``), resolved as the detector resolves them. A YAML the driver cannot read adds only
    itself: the driver's own check of the data says what is wrong with it."""
    from evolve.config.trial import data_sets

    paths: list[str] = []
    for name in data_sets(data):
        yaml_path = Path(name).expanduser().resolve()
        paths.append(str(yaml_path))
        try:
            spec = yaml.safe_load(yaml_path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(spec, dict):
            continue
        root = yaml_path.parent
        if spec.get("path"):
            root = root / Path(str(spec["path"])).expanduser()  # an absolute path replaces the folder
            paths.append(str(root))
        for key in ("train", "val"):
            value = spec.get(key)
            for src in value if isinstance(value, list) else [value] if value else []:
                paths.append(str(root / Path(str(src)).expanduser()))
    return list(dict.fromkeys(paths))


def _missing(paths: Sequence[str]) -> str | None:
    return next((p for p in paths if not os.path.exists(p)), None)


def check_paths_on_nodes(paths: Sequence[str], flag: str = "--data") -> None:
    """ConfigError naming the node and the path unless every live node that can run trials (one with CPUs
    or GPUs) has every path in ``paths``. Each node is asked by a task pinned to it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not paths:
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")
             and (n["Resources"].get("CPU", 0) > 0 or n["Resources"].get("GPU", 0) > 0)]
    probe = ray.remote(num_cpus=0, max_retries=0)(_missing)
    pinned = [NodeAffinitySchedulingStrategy(n["NodeID"], soft=False) for n in nodes]
    refs = [probe.options(scheduling_strategy=s).remote(list(paths)) for s in pinned]
    ray.wait(refs, num_returns=len(refs), timeout=PATHS_TIMEOUT_S)
    for node, ref in zip(nodes, refs):
        try:
            missing = ray.get(ref, timeout=0)
        except Exception as exc:  # noqa: BLE001 - a node that cannot answer is not a reason to refuse the run
            LOGGER.warning("%s: node %s did not say whether it has the data (%s); its trials will",
                           flag, node["NodeManagerAddress"], type(exc).__name__)
            continue
        if missing is not None:
            raise ConfigError(f"{flag}: node {node['NodeManagerAddress']} (Ray node {node['NodeID'][:12]}) "
                              f"has no {missing}; every node needs the data at the same path (a shared "
                              f"filesystem, or a copy)")


@contextmanager
def head_watch(cfg: RayConfig, on_lost: Callable[[str], None]) -> Iterator[None]:
    """While inside, ``on_lost(address)`` is called (from a watcher thread, once) when the head of the
    cluster joined with ``--address`` stops answering for ``HEAD_LOST_AFTER_S``; nothing for a local Ray,
    which lives and dies with this process."""
    if cfg.address is None:
        yield
        return
    import ray

    address = ray.get_runtime_context().gcs_address  # what `auto` resolved to
    stop = threading.Event()

    def watch() -> None:
        since: float | None = None
        while not stop.wait(WATCH_INTERVAL_S):
            try:
                check_reachable(address)
                since = None
            except ConfigError:
                since = since or time.monotonic()
                if time.monotonic() - since >= HEAD_LOST_AFTER_S and not stop.is_set():
                    on_lost(address)
                    return

    thread = threading.Thread(target=watch, name="head-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


@contextmanager
def ray_session(cfg: RayConfig, paths: Sequence[str] = ()) -> Iterator[None]:
    """Ray started or joined and the resource flags checked against it, and on a cluster the ``paths``
    trials read checked on every node; Ray shut down afterwards if this started it (a Ray someone else
    started in this process is left running)."""
    started = start_or_join(cfg)
    try:
        check_resources(cfg)
        if cfg.address is not None:
            check_paths_on_nodes(paths)
        yield
    finally:
        if started:
            shutdown()
