"""A real multi-host Ray cluster on one Linux machine: every node its own network host.

Each node is a network namespace with its own address on a private bridge, plus its own PID and mount
namespaces: its processes see only each other (so Ray's process discovery, which greps ``ps``, and any
``ray stop`` find only this node's Ray, never the other clusters on the machine), and its ``/tmp/ray`` is
a folder of its own (Ray's sessions, sockets and ``ray_current_cluster`` file stay private). The files
everything else sees are the machine's: the checkout, the data and the run folder are a shared
filesystem, as on a cluster with NFS. A node can be given a path that does not exist there (an empty
tmpfs mounted over it) and a home without the token file.

Nodes are started with the real CLI (``ray start``) and token authentication on: the head's home has
``~/.ray/auth_token`` (made by ``ray get-auth-token --generate``) and so does every node's unless told
otherwise, with ``RAY_AUTH_MODE=token`` set: the recipe of docs/cluster.md. A node told to lack the token
has neither, like a machine nobody set up; the head refuses it. The driver runs in a namespace of its own
that holds a Ray node with no CPUs (Ray's drivers attach to a local raylet), never on the head.

Teardown is by pid and by namespace name: each node's PID namespace dies with its first process (killed
with SIGKILL; ``unshare --kill-child`` passes that on), then whatever ``ip netns pids`` still lists is
killed, the namespaces and the bridge deleted. ``kill_node`` is the same SIGKILL on one node: its raylet
and workers vanish without a goodbye. A state file lets ``down`` clean up after a crashed caller.

    python benchmarks/netns_cluster.py up --base /tmp/nc --workers 2   # prints the head address
    python benchmarks/netns_cluster.py exec --base /tmp/nc driver -- python orchestrate.py --address ...
    python benchmarks/netns_cluster.py down --base /tmp/nc

Needs root, ``ip`` (iproute2), ``unshare`` and ``nsenter`` (util-linux); ``missing_requirements`` says
which is absent, for tests to skip with that reason.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

LOGGER = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
GCS_PORT = 6379
OBJECT_STORE_BYTES = 100 * 1024 * 1024  # Ray's floor: 75 MiB; its default, 30% of RAM per node, is waste
STATE_FILE = "netns_cluster.json"
START_TIMEOUT_S = 180.0


def missing_requirements() -> str:
    """Why the harness cannot run here (empty when it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and mounts)"
    for tool in ("ip", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"needs '{tool}' on PATH"
    if sys.platform != "linux":
        return "needs Linux namespaces"
    return ""


@dataclass
class Node:
    """One host of the cluster: namespace, address, the pid of its namespaces' holder, what it lacks."""

    name: str
    netns: str
    ip: str
    cpus: int = 0
    pid: int = 0  # the `unshare` process in the machine's PID namespace; SIGKILL ends the whole node
    token: bool = True
    hidden: list[str] = field(default_factory=list)
    ray_started: bool = False


class NetnsCluster:
    """Namespaces on a bridge, Ray nodes in them, and the commands to run, kill and tear down."""

    def __init__(self, base: str | Path, tag: str | None = None, subnet: str = "10.77.0",
                 env: Mapping[str, str] | None = None) -> None:
        self.base = Path(base).resolve()
        self.tag = tag or f"{os.getpid() % 100000}"
        self.subnet = subnet
        self.bridge = f"yeb{self.tag}"
        self.nodes: dict[str, Node] = {}
        self.extra_env = dict(env or {})
        self.up_done = False

    # -- state ---------------------------------------------------------------------------------------------
    @property
    def head_address(self) -> str:
        return f"{self.nodes['head'].ip}:{GCS_PORT}"

    def home(self, node: Node) -> Path:
        return self.base / "homes" / node.name

    def _save(self) -> None:
        state = {"tag": self.tag, "subnet": self.subnet, "bridge": self.bridge,
                 "nodes": [asdict(n) for n in self.nodes.values()]}
        (self.base / STATE_FILE).write_text(json.dumps(state, indent=1))

    @classmethod
    def load(cls, base: str | Path) -> NetnsCluster:
        state = json.loads((Path(base) / STATE_FILE).read_text())
        cluster = cls(base, tag=state["tag"], subnet=state["subnet"])
        cluster.nodes = {n["name"]: Node(**n) for n in state["nodes"]}
        return cluster

    # -- network and namespaces -----------------------------------------------------------------------------
    def _ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)

    def _setup_bridge(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self._ip("link", "add", self.bridge, "type", "bridge")
        self._ip("link", "set", self.bridge, "up")
        self._save()

    def add_node(self, name: str, cpus: int = 0, token: bool = True, hidden: Sequence[str] = (),
                 start_ray: bool = True) -> Node:
        """A new host on the bridge (next free address) and, unless told not, a Ray node on it."""
        if not self.nodes:
            self._setup_bridge()
        index = len(self.nodes) + 1
        node = Node(name=name, netns=f"ye{self.tag}-{name}", ip=f"{self.subnet}.{index}", cpus=cpus,
                    token=token, hidden=list(hidden))
        self.nodes[name] = node
        self._save()  # before anything exists, so that `down` finds it whatever fails next
        host_end, ns_end = f"ye{self.tag}v{index}", f"ye{self.tag}n{index}"
        self._ip("netns", "add", node.netns)
        self._ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        self._ip("link", "set", host_end, "master", self.bridge, "up")
        self._ip("link", "set", ns_end, "netns", node.netns)
        for args in (("addr", "add", f"{node.ip}/24", "dev", ns_end), ("link", "set", ns_end, "up"),
                     ("link", "set", "lo", "up")):
            self._ip("netns", "exec", node.netns, "ip", *args)
        self._prepare_home(node)
        self._hold(node)
        self._save()
        if start_ray:
            self.start_ray(node)
        return node

    def _prepare_home(self, node: Node) -> None:
        home = self.home(node)
        (home / "tmp-ray").mkdir(parents=True, exist_ok=True)
        token = self.base / "homes" / "head" / ".ray" / "auth_token"
        if node.name == "head" and not token.exists():
            subprocess.run(["ray", "get-auth-token", "--generate"], env=self._env(node), check=True,
                           capture_output=True, text=True, timeout=120)
        if node.token and node.name != "head" and token.exists():
            (home / ".ray").mkdir(exist_ok=True)
            shutil.copy(token, home / ".ray" / "auth_token")

    def _hold(self, node: Node) -> None:
        """Start the node's PID and mount namespaces, held by a sleeping first process."""
        mounts = [f"mount --bind {self.home(node) / 'tmp-ray'} /tmp/ray"]
        mounts += [f"mount -t tmpfs -o size=1m hidden {path}" for path in node.hidden]
        script = "mkdir -p /tmp/ray && " + " && ".join(mounts) + " && exec sleep infinity"
        argv = ["ip", "netns", "exec", node.netns, "unshare", "--fork", "--pid", "--mount", "--mount-proc",
                "--propagation", "private", "--kill-child", "sh", "-c", script]
        with open(self.base / f"{node.name}.hold.log", "w") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                    start_new_session=True)
        node.pid = proc.pid
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # ready when the first process of the namespace sleeps
            init = self._init_pid(node)
            if init and Path(f"/proc/{init}/comm").read_text().strip() == "sleep":
                return
            if proc.poll() is not None:
                raise RuntimeError(f"node {node.name}: namespace holder exited: "
                                   f"{(self.base / f'{node.name}.hold.log').read_text()[-500:]}")
            time.sleep(0.05)
        raise RuntimeError(f"node {node.name}: namespaces not ready within 30 s")

    def _init_pid(self, node: Node) -> int:
        try:
            children = Path(f"/proc/{node.pid}/task/{node.pid}/children").read_text().split()
        except OSError:
            return 0
        return int(children[0]) if children else 0

    # -- commands in a node ------------------------------------------------------------------------------
    def _env(self, node: Node, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RAY_ADDRESS", "RAY_AUTH")) and k != "PYTHONPATH"}
        env.update(HOME=str(self.home(node)), OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0",
                   PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
        if node.token:
            # A joining node does not turn token mode on because it finds the file (only a head does), and
            # then Ray sends no token; the mode must be set on every node and driver.
            env["RAY_AUTH_MODE"] = "token"
        env.update(self.extra_env)
        env.update(extra or {})
        return env

    def command(self, name: str, argv: Sequence[str]) -> list[str]:
        """``argv`` as run inside node ``name``'s network, mount and PID namespaces."""
        node = self.nodes[name]
        init = self._init_pid(node)
        if not init:
            raise RuntimeError(f"node {name} is not running")
        return ["nsenter", "-t", str(init), "--net", "--mount", "--pid", f"--wd={os.getcwd()}", "--", *argv]

    def popen(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
              **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.command(name, argv), env=self._env(self.nodes[name], env), **kwargs)

    def run(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
            timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(name, argv), env=self._env(self.nodes[name], env), timeout=timeout,
                              capture_output=True, text=True, check=check)

    def start_ray(self, node: Node, address: str | None = None) -> subprocess.CompletedProcess:
        """``ray start`` in the node: the head on its address, any other node joining the head."""
        common = ["--node-ip-address", node.ip, "--num-cpus", str(node.cpus), "--num-gpus", "0",
                  "--object-store-memory", str(OBJECT_STORE_BYTES), "--disable-usage-stats"]
        if node.name == "head":
            argv = ["ray", "start", "--head", "--port", str(GCS_PORT), "--include-dashboard=false", *common]
        else:
            argv = ["ray", "start", "--address", address or self.head_address, *common]
        proc = self.run(node.name, argv, timeout=START_TIMEOUT_S)
        (self.base / f"{node.name}.start.log").write_text(proc.stdout + proc.stderr)
        node.ray_started = proc.returncode == 0
        self._save()
        if proc.returncode != 0 and node.token:
            raise RuntimeError(f"ray start on node {node.name} failed ({proc.returncode}): "
                               f"{(proc.stdout + proc.stderr)[-1500:]}")
        return proc

    def alive_nodes(self, via: str = "driver") -> list[dict]:
        """The cluster's live nodes as Ray lists them (ip, node_id, CPUs), asked from node ``via``."""
        script = ("import json, ray; ray.init(address='auto', log_to_driver=False, logging_level='ERROR');"
                  "print(json.dumps([{'ip': n['NodeManagerAddress'], 'node_id': n['NodeID'], "
                  "'cpus': n['Resources'].get('CPU', 0)} for n in ray.nodes() if n['Alive']]))")
        proc = self.run(via, [sys.executable, "-c", script], timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"listing nodes from {via} failed: {proc.stderr[-1500:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def wait_nodes(self, count: int, timeout: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            nodes = self.alive_nodes()
            if len(nodes) == count or time.monotonic() > deadline:
                return nodes
            time.sleep(1.0)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def up(self, workers: int = 2, worker_cpus: int = 1, driver: bool = True) -> NetnsCluster:
        """Head (no CPUs), ``workers`` worker hosts of ``worker_cpus`` CPUs, and a driver host (no CPUs)."""
        self.add_node("head")
        for i in range(1, workers + 1):
            self.add_node(f"w{i}", cpus=worker_cpus)
        if driver:
            self.add_node("driver")
        return self

    def kill_node(self, name: str) -> None:
        """SIGKILL the node's first process: the kernel kills everything in its PID namespace."""
        node = self.nodes[name]
        if node.pid:
            _kill(node.pid)
        for pid in self._netns_pids(node):
            _kill(pid)
        node.ray_started = False
        self._save()

    def restart_node(self, name: str, ip: str | None = None) -> None:
        """A node killed and started again, with fresh namespaces and a new Ray node, on its address or on
        ``ip`` (a head moved to a new address: nodes started after it join it there)."""
        node = self.nodes[name]
        self.kill_node(name)
        if ip is not None and ip != node.ip:
            index = list(self.nodes).index(name) + 1
            for args in (("addr", "flush", "dev", f"ye{self.tag}n{index}"),
                         ("addr", "add", f"{ip}/24", "dev", f"ye{self.tag}n{index}")):
                self._ip("netns", "exec", node.netns, "ip", *args)
            node.ip = ip
        self._hold(node)
        self.start_ray(node)

    def _netns_pids(self, node: Node) -> list[int]:
        out = self._ip("netns", "pids", node.netns, check=False).stdout
        return [int(p) for p in out.split() if p.isdigit()]

    def down(self) -> None:
        """Every node killed by pid, leftovers by namespace, namespaces and bridge deleted; quiet if gone."""
        for node in self.nodes.values():
            self.kill_node(node.name)
        deadline = time.monotonic() + 10
        for node in self.nodes.values():
            while self._netns_pids(node) and time.monotonic() < deadline:
                time.sleep(0.1)
            self._ip("netns", "del", node.netns, check=False)
        self._ip("link", "del", self.bridge, check=False)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start head, workers and a driver host; print the head address")
    up.add_argument("--base", required=True)
    up.add_argument("--workers", type=int, default=2)
    up.add_argument("--worker-cpus", type=int, default=1)
    run = sub.add_parser("exec", help="run a command in a node (head, w1, ..., driver)")
    run.add_argument("--base", required=True)
    run.add_argument("node")
    run.add_argument("argv", nargs=argparse.REMAINDER)
    kill = sub.add_parser("kill", help="SIGKILL one node")
    kill.add_argument("--base", required=True)
    kill.add_argument("node")
    down = sub.add_parser("down", help="tear the cluster down")
    down.add_argument("--base", required=True)
    args = parser.parse_args(argv)
    why = missing_requirements()
    if why:
        print(f"netns_cluster: {why}", file=sys.stderr)
        return 2
    if args.cmd == "up":
        cluster = NetnsCluster(args.base)
        try:
            cluster.up(args.workers, args.worker_cpus)
        except Exception:
            cluster.down()
            raise
        print(cluster.head_address)
        return 0
    cluster = NetnsCluster.load(args.base)
    if args.cmd == "exec":
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        return subprocess.call(cluster.command(args.node, argv), env=cluster._env(cluster.nodes[args.node]))
    if args.cmd == "kill":
        cluster.kill_node(args.node)
        return 0
    cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
