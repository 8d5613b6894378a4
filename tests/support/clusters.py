"""Clusters on loopback for the cluster tests: a Redis Cluster of three masters and
three replicas, and a RabbitMQ cluster of three nodes, each made of real server
processes that a test can kill one by one.

    python -m tests.support.clusters up

starts both for a developer, prints the FACTQ_* settings that point at them, and
tears them down on Ctrl-C.

Starting and tearing down are synchronous, for session fixtures and the command
line; what a test calls in between (queries, waits, restarts) is async, so that a
worker or an API in the test's event loop keeps running meanwhile. Each server
runs in a session of its own: Ctrl-C in a terminal reaches only Python, which then
kills every process it started, whatever state the start reached.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import redis.asyncio as redis
from redis.crc import key_slot

HOST = "127.0.0.1"
SLOTS = 16384
CLI_TIMEOUT_S = 60.0
# Small, so that a killed master is failed over in a few seconds.
REDIS_NODE_TIMEOUT_MS = 1000
RABBIT_SCRIPTS = Path("/usr/lib/rabbitmq/bin")  # Debian's, behind the root-only wrappers


class ClusterUnavailable(Exception):
    """The servers a cluster needs are not installed on this machine."""


class CommandFailed(RuntimeError):
    """A command line (redis-cli, rabbitmqctl) exited non-zero."""


class ServerExited(RuntimeError):
    """A server exited while the cluster waited for it."""


def new_run_id() -> str:
    return uuid4().hex[:8]


def free_ports(count: int) -> list[int]:
    """Ports free on loopback now, all different: held open together while picked."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def _spawn(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _kill(processes: list[subprocess.Popen[bytes] | None]) -> None:
    """SIGKILL each process and its process group (what it started), then reap them."""
    started = [process for process in processes if process is not None]
    for process in started:
        # Only while it is unreaped is its pid (the group's id) surely still ours; once
        # it has exited, so has its group (each server's parent waits for it).
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    for process in started:
        process.wait(timeout=10)


async def _wait_for(
    check: Callable[[], Awaitable[str | None]], timeout_s: float, what: str
) -> None:
    """Poll check() (why not yet, or None) until None; TimeoutError with the last reason.

    A node that does not answer yet, or a CLI call that fails, is one more reason to
    wait; a server that exited (ServerExited) ends the wait at once."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            reason = await check()
        except (redis.RedisError, OSError, CommandFailed, json.JSONDecodeError) as exc:
            # json: rabbitmqctl prints nothing while a node is still booting.
            reason = repr(exc)
        if reason is None:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: still not after {timeout_s:g} s: {reason}")
        await asyncio.sleep(0.1)


async def _run(command: list[str], timeout_s: float = CLI_TIMEOUT_S) -> str:
    """Run a command line to its end; its stdout, or CommandFailed with its output."""
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        # A directory every user may enter: rabbitmqctl runs as the rabbitmq user,
        # which may not enter the test's own (a fresh clone under a private /tmp dir).
        cwd="/",
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, _ = await process.communicate()
    except BaseException:
        # Timed out or cancelled: kill its whole group, as runuser passes no SIGKILL on.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.communicate()
        raise
    text = out.decode(errors="replace")
    if process.returncode != 0:
        raise CommandFailed(f"{' '.join(command)} exited {process.returncode}: {text[-2000:]}")
    return text


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


# --- Redis Cluster ---------------------------------------------------------------------


def missing_redis() -> str | None:
    """Why no Redis Cluster can start here, or None."""
    missing = [tool for tool in ("redis-server", "redis-cli") if shutil.which(tool) is None]
    return f"{' and '.join(missing)} not installed" if missing else None


@dataclass(frozen=True)
class RedisNodeState:
    """One node as a node of the cluster sees it (a line of CLUSTER NODES)."""

    port: int
    node_id: str
    master_port: int | None  # None for a master
    is_failed: bool
    slots: tuple[tuple[int, int], ...]


def _parse_nodes(nodes: dict[str, dict[str, Any]]) -> dict[int, RedisNodeState]:
    """CLUSTER NODES, as redis-py parses it, by port."""
    ports = {
        entry["node_id"]: int(address.split("@")[0].rsplit(":", 1)[1])
        for address, entry in nodes.items()
    }
    states = {}
    for entry in nodes.values():
        port = ports[entry["node_id"]]
        slots = tuple((int(s[0]), int(s[-1])) for s in entry["slots"])
        states[port] = RedisNodeState(
            port=port,
            node_id=entry["node_id"],
            master_port=ports.get(entry["master_id"]),
            is_failed="fail" in entry["flags"].split(","),
            slots=slots,
        )
    return states


@dataclass
class RedisNode:
    port: int
    bus_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start redis-server; its nodes.conf, if any, brings it back into the cluster."""
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            "redis-server",
            "--port", str(self.port),
            "--bind", HOST,
            "--cluster-enabled", "yes",
            "--cluster-port", str(self.bus_port),
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(REDIS_NODE_TIMEOUT_MS),
            # A replica takes over however long its master was silent.
            "--cluster-replica-validity-factor", "0",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.process = _spawn(command, self.directory / "stdout.log")

    def kill(self) -> None:
        _kill([self.process])
        self.process = None


class RedisCluster:
    """Six redis-server processes in one cluster: three masters, one replica each."""

    def __init__(self, run_id: str, directory: Path, nodes: list[RedisNode]) -> None:
        self.run_id = run_id
        self.directory = directory
        self.nodes = {node.port: node for node in nodes}
        self.started_in_s = 0.0
        # The cluster as last seen settled: kill_master and wait_for_failover use it.
        self._topology: dict[int, RedisNodeState] = {}

    @classmethod
    def create(cls, run_id: str) -> RedisCluster:
        directory = Path(tempfile.mkdtemp(prefix=f"factq-redis-cluster-{run_id}-"))
        ports = free_ports(12)
        nodes = [
            RedisNode(port, bus_port, directory / str(port))
            for port, bus_port in zip(ports[:6], ports[6:], strict=True)
        ]
        return cls(run_id, directory, nodes)

    @property
    def ports(self) -> list[int]:
        return list(self.nodes)

    @property
    def url(self) -> str:
        """A startup URL for a cluster client: a node that runs now."""
        return self.nodes[self._running_port()].url

    async def start(self, timeout_s: float = 60.0) -> None:
        started = time.monotonic()
        for node in self.nodes.values():
            node.start()
        await _wait_for(self._not_answering, timeout_s, "redis-server answering PING")
        addresses = [f"{HOST}:{port}" for port in self.nodes]
        await _run(["redis-cli", "--cluster", "create", *addresses,
                    "--cluster-replicas", "1", "--cluster-yes"])  # fmt: skip
        await self._settle(timeout_s, "Redis Cluster up, every replica synced")
        self.started_in_s = time.monotonic() - started

    def stop(self) -> None:
        """Kill every node and remove the cluster's directory."""
        _kill([node.process for node in self.nodes.values()])
        shutil.rmtree(self.directory, ignore_errors=True)

    async def masters(self) -> list[int]:
        """The ports of the masters that serve slots now."""
        view = await self._view(self._running_port())
        return sorted(state.port for state in view.values() if state.slots and not state.is_failed)

    async def master_of(self, key_or_slot: str | bytes | int) -> int:
        """The port of the master that serves this key (or slot) now."""
        if isinstance(key_or_slot, int):
            slot = key_or_slot
        else:
            slot = key_slot(key_or_slot.encode() if isinstance(key_or_slot, str) else key_or_slot)
        view = await self._view(self._running_port())
        for state in view.values():
            if not state.is_failed and any(lo <= slot <= hi for lo, hi in state.slots):
                return state.port
        raise LookupError(f"no master serves slot {slot}")

    def kill_master(self, port: int) -> None:
        """kill -9 the master on this port; its replica takes over (see wait_for_failover)."""
        state = self._topology.get(port)
        if state is None or state.master_port is not None:
            raise ValueError(f"{port} was no master when the cluster last settled")
        self.nodes[port].kill()

    async def wait_for_failover(self, killed_port: int, timeout_s: float = 30.0) -> int:
        """Wait until a replica of the killed master serves its slots and every running
        node reports cluster_state:ok; the new master's port."""
        killed = self._topology[killed_port]
        replicas = {
            state.port for state in self._topology.values() if state.master_port == killed_port
        }
        promoted: list[int] = []

        async def not_failed_over() -> str | None:
            views = await self._views()
            for port, view in views.items():
                now = [
                    p for p in replicas if view[p].slots == killed.slots and not view[p].is_failed
                ]
                if not view[killed_port].is_failed or not now:
                    return f"{port} sees no replica of {killed_port} serving its slots"
                promoted[:] = now
            return await self._problem(views, expect_replicas=False)

        await _wait_for(not_failed_over, timeout_s, f"failover of {killed_port}")
        self._topology = (await self._views())[promoted[0]]
        return promoted[0]

    async def restart(self, port: int, timeout_s: float = 30.0) -> None:
        """Start a killed node again: it comes back as a replica of whoever took its slots."""
        self.nodes[port].start()
        await self._settle(timeout_s, f"{port} back as a synced replica")

    async def _not_answering(self) -> str | None:
        self._check_exits()
        for node in self.nodes.values():
            async with self._client(node.port) as client:
                await client.ping()
        return None

    def _check_exits(self) -> None:
        """ServerExited for a node that exited though nobody killed it."""
        for node in self.nodes.values():
            if node.process is not None and node.process.poll() is not None:
                log = _tail(node.directory / "redis.log")
                raise ServerExited(f"redis-server on {node.port} exited:\n{log}")

    async def _settle(self, timeout_s: float, what: str) -> None:
        """Wait until every node runs, sees cluster_state:ok and agrees, every master
        has a synced replica; remember that topology."""

        async def problem() -> str | None:
            self._check_exits()
            return await self._problem(await self._views(), expect_replicas=True)

        await _wait_for(problem, timeout_s, what)
        self._topology = next(iter((await self._views()).values()))

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(host=HOST, port=port, socket_timeout=2, socket_connect_timeout=2)

    def _running_port(self) -> int:
        return next(node.port for node in self.nodes.values() if node.is_running)

    async def _view(self, port: int) -> dict[int, RedisNodeState]:
        async with self._client(port) as client:
            return _parse_nodes(await client.cluster("NODES"))

    async def _views(self) -> dict[int, dict[int, RedisNodeState]]:
        """CLUSTER NODES of every running node, by the port that answered."""
        return {
            node.port: await self._view(node.port)
            for node in self.nodes.values()
            if node.is_running
        }

    async def _problem(
        self, views: dict[int, dict[int, RedisNodeState]], *, expect_replicas: bool
    ) -> str | None:
        """Why the running nodes are not yet one settled cluster, or None."""
        masters = {
            frozenset((s.port, s.slots) for s in view.values() if s.slots and not s.is_failed)
            for view in views.values()
        }
        if len(masters) != 1:
            return f"the nodes disagree on the masters: {masters}"
        for port, view in views.items():
            reason = await self._node_problem(port, view, expect_replicas=expect_replicas)
            if reason is not None:
                return reason
        return None

    async def _node_problem(
        self, port: int, view: dict[int, RedisNodeState], *, expect_replicas: bool
    ) -> str | None:
        async with self._client(port) as client:
            info = await client.cluster("INFO")
            replication = await client.info("replication")
        if info["cluster_state"] != "ok" or int(info["cluster_slots_ok"]) != SLOTS:
            return f"{port}: cluster_state {info['cluster_state']}"
        if view[port].master_port is not None and (
            replication.get("master_link_status") != "up"
            or replication.get("master_sync_in_progress")
        ):
            return f"{port}: replica not yet synced with {view[port].master_port}"
        failed = [s.port for s in view.values() if s.is_failed and self.nodes[s.port].is_running]
        if failed:
            return f"{port} still sees {failed} as failed"
        replicated = {s.master_port for s in view.values() if not s.is_failed}
        orphans = [s.port for s in view.values() if s.slots and s.port not in replicated]
        if expect_replicas and orphans:
            return f"{port} sees masters without a replica: {orphans}"
        return None


@contextmanager
def redis_cluster(run_id: str | None = None) -> Iterator[RedisCluster]:
    """A running Redis Cluster, torn down on exit, a failed start included."""
    reason = missing_redis()
    if reason is not None:
        raise ClusterUnavailable(reason)
    cluster = RedisCluster.create(run_id or new_run_id())
    try:
        asyncio.run(cluster.start())
        yield cluster
    finally:
        cluster.stop()


# --- RabbitMQ cluster ------------------------------------------------------------------


def _rabbit_script(name: str) -> str | None:
    script = RABBIT_SCRIPTS / name
    if script.exists():
        return str(script)
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")


def _as_rabbitmq() -> list[str]:
    """The prefix that runs a command as the rabbitmq user (whose cookie the CLI needs),
    when we are root; the node's files must belong to that user then."""
    return ["runuser", "-u", "rabbitmq", "--"] if os.geteuid() == 0 else []


def missing_rabbitmq() -> str | None:
    """Why no RabbitMQ cluster can start here, or None."""
    missing = [name for name in ("rabbitmq-server", "rabbitmqctl") if _rabbit_script(name) is None]
    if missing:
        return f"{' and '.join(missing)} not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("rabbitmq")
        except KeyError:
            return "running as root, and there is no rabbitmq user to run rabbitmq-server as"
    return None


@dataclass
class RabbitNode:
    name: str  # factq-cN-RUNID@localhost
    amqp_port: int
    dist_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.amqp_port}/"

    @property
    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def prepare(self) -> None:
        """Its directory, config (the AMQP listener on its port: the system's
        rabbitmq.conf pins 5672), no plugins, and an empty rabbitmq-env.conf
        (the system's names the default node)."""
        self.directory.mkdir(parents=True)
        (self.directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = {HOST}:{self.amqp_port}\n"
        )
        (self.directory / "enabled_plugins").write_text("[].\n")
        (self.directory / "rabbitmq-env.conf").write_text("")

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.directory / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.directory / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.directory / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": HOST,
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def start(self) -> None:
        """rabbitmq-server in the foreground, in a process group of its own."""
        server = _rabbit_script("rabbitmq-server")
        assert server is not None
        self.process = _spawn([*_as_rabbitmq(), server], self.directory / "stdout.log", self.env())

    def kill(self) -> None:
        _kill([self.process])
        self.process = None


class RabbitCluster:
    """Three RabbitMQ nodes clustered: nodes 2 and 3 joined node 1."""

    def __init__(self, run_id: str, directory: Path, nodes: list[RabbitNode]) -> None:
        self.run_id = run_id
        self.directory = directory
        self.nodes = {node.name: node for node in nodes}
        self.started_in_s = 0.0

    @classmethod
    def create(cls, run_id: str) -> RabbitCluster:
        directory = Path(tempfile.mkdtemp(prefix=f"factq-rabbit-cluster-{run_id}-"))
        ports = free_ports(6)
        nodes = [
            RabbitNode(
                f"factq-c{i + 1}-{run_id}@localhost",
                ports[2 * i],
                ports[2 * i + 1],
                directory / f"c{i + 1}",
            )
            for i in range(3)
        ]
        return cls(run_id, directory, nodes)

    @property
    def names(self) -> list[str]:
        return list(self.nodes)

    @property
    def urls(self) -> list[str]:
        """One AMQP URL per node, node 1 first."""
        return [node.url for node in self.nodes.values()]

    async def start(self, timeout_s: float = 120.0) -> None:
        started = time.monotonic()
        for node in self.nodes.values():
            node.prepare()
        if _as_rabbitmq():
            user = pwd.getpwnam("rabbitmq")
            for path in [self.directory, *self.directory.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid)
        for node in self.nodes.values():
            node.start()
        # A TaskGroup, not gather: cancelled, it still waits for each boot wait to
        # reap its rabbitmqctl before the loop closes.
        async with asyncio.TaskGroup() as group:
            for node in self.nodes.values():
                group.create_task(self._wait_booted(node, timeout_s))
        first, *others = self.names
        for name in others:
            await self.ctl(name, "stop_app")
            await self.ctl(name, "join_cluster", first)
            await self.ctl(name, "start_app")
        await self._wait_running(set(self.names), timeout_s)
        self.started_in_s = time.monotonic() - started

    def stop(self) -> None:
        """Kill every node and remove the cluster's directory."""
        _kill([node.process for node in self.nodes.values()])
        shutil.rmtree(self.directory, ignore_errors=True)

    def url_of(self, name: str) -> str:
        return self.nodes[name].url

    async def ctl(self, name: str, *args: str, timeout_s: float = CLI_TIMEOUT_S) -> str:
        """rabbitmqctl -n NAME ARGS..., as the rabbitmq user when we are root; its stdout."""
        rabbitmqctl = _rabbit_script("rabbitmqctl")
        assert rabbitmqctl is not None
        return await _run([*_as_rabbitmq(), rabbitmqctl, "-n", name, *args], timeout_s)

    async def running_nodes(self) -> list[str]:
        """The cluster's running nodes, as a running node of it reports them."""
        status = json.loads(
            await self.ctl(self._running_name(), "cluster_status", "--formatter", "json")
        )
        return sorted(status["running_nodes"])

    async def queue_members(self, queue_name: str) -> list[str]:
        """The nodes that hold a replica of this quorum queue (in the default vhost)."""
        return sorted(await self._queue_info(queue_name, "members") or [])

    async def queue_leader(self, queue_name: str) -> str | None:
        """The node of this quorum queue's leader now, or None while it has none (or
        the cluster cannot tell, as during an election)."""
        try:
            leader = await self._queue_info(queue_name, "leader")
        except CommandFailed:
            return None
        return leader if isinstance(leader, str) and leader in self.nodes else None

    def stop_node(self, name: str) -> None:
        """kill -9 the node (its beam and all it started): the others see it go at once."""
        self.nodes[name].kill()

    async def start_node(self, name: str, timeout_s: float = 60.0) -> None:
        """Start a stopped node again; it rejoins the cluster from its own data."""
        node = self.nodes[name]
        node.start()
        await self._wait_booted(node, timeout_s)
        running = {other.name for other in self.nodes.values() if other.is_running}
        await self._wait_running(running, timeout_s)

    def _running_name(self) -> str:
        return next(name for name, node in self.nodes.items() if node.is_running)

    async def _queue_info(self, queue_name: str, column: str) -> Any:
        out = await self.ctl(
            self._running_name(), "list_queues", "--quiet", "--formatter", "json", "name", column
        )
        rows = [row for row in json.loads(out) if row["name"] == queue_name]
        if not rows:
            raise LookupError(f"no queue {queue_name!r} on the cluster")
        return rows[0][column]

    async def _wait_booted(self, node: RabbitNode, timeout_s: float) -> None:
        """Until the node's AMQP listener answers (the last step of its boot), then
        confirm with `rabbitmqctl await_startup`."""

        async def not_listening() -> str | None:
            if not node.is_running:
                log = _tail(node.directory / "stdout.log")
                raise ServerExited(f"{node.name} exited while starting:\n{log}")
            _, writer = await asyncio.open_connection(HOST, node.amqp_port)
            writer.close()
            await writer.wait_closed()
            return None

        await _wait_for(not_listening, timeout_s, f"{node.name} listening on {node.amqp_port}")
        await self.ctl(node.name, "await_startup", "--timeout", str(int(timeout_s)))

    async def _wait_running(self, names: set[str], timeout_s: float) -> None:
        async def not_running() -> str | None:
            running = set(await self.running_nodes())
            return None if running == names else f"running: {sorted(running)}"

        await _wait_for(not_running, timeout_s, f"the cluster running {sorted(names)}")


@contextmanager
def rabbit_cluster(run_id: str | None = None) -> Iterator[RabbitCluster]:
    """A running RabbitMQ cluster, torn down on exit, a failed start included."""
    reason = missing_rabbitmq()
    if reason is not None:
        raise ClusterUnavailable(reason)
    cluster = RabbitCluster.create(run_id or new_run_id())
    try:
        asyncio.run(cluster.start())
        yield cluster
    finally:
        cluster.stop()


# --- python -m tests.support.clusters up -----------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.clusters")
    parser.add_argument("command", choices=["up"], help="start both clusters until Ctrl-C")
    parser.parse_args()
    run_id = new_run_id()
    # SIGTERM tears down as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with redis_cluster(run_id) as redis_nodes, rabbit_cluster(run_id) as rabbit_nodes:
            print(
                f"# Redis Cluster up in {redis_nodes.started_in_s:.1f} s, "
                f"RabbitMQ cluster in {rabbit_nodes.started_in_s:.1f} s; Ctrl-C stops both"
            )
            print("FACTQ_REDIS_CLUSTER=true")
            print(f"FACTQ_REDIS_URL={redis_nodes.url}")
            print(f"FACTQ_AMQP_URL={','.join(rabbit_nodes.urls)}", flush=True)
            while True:
                signal.pause()
    except KeyboardInterrupt:
        print("# stopped")
    except ClusterUnavailable as exc:
        raise SystemExit(f"cannot start the clusters: {exc}") from exc


if __name__ == "__main__":
    main()
