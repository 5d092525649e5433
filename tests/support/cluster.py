"""A real Redis Cluster on loopback ports, started by the tests (fakeredis has none).

``LocalCluster(directory, primaries=3, replicas=0).start()`` runs one
``redis-server --cluster-enabled yes`` per node, joins them with
``redis-cli --cluster create`` and waits until every node says ``cluster_state:ok``
(well under a second for three). ``kill``, ``restart`` and ``failover`` are the faults
the chaos run injects.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
from pathlib import Path
from urllib.parse import quote

import redis

from tests.support.servers import wait_for_ping
from tests.support.wait import wait_until


def cluster_port() -> int:
    """A port whose cluster bus port (+10000) is free too; at most 55535, as Redis asks."""
    while True:
        port = random.randint(20000, 45000)
        if all(_free(p) for p in (port, port + 10000)):
            return port


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class LocalCluster:
    """Cluster nodes as child processes, each with its own directory."""

    def __init__(
        self,
        directory: Path,
        *,
        primaries: int = 3,
        replicas: int = 0,
        node_timeout_ms: int = 1000,
        appendonly: bool = False,
        password: str | None = None,
    ) -> None:
        for binary in ("redis-server", "redis-cli"):
            if shutil.which(binary) is None:
                raise RuntimeError(f"{binary} is not installed")
        self.directory = directory
        self.primaries = primaries
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.appendonly = appendonly
        self.password = password  # requirepass (and masterauth) on every node
        self.ports = [cluster_port() for _ in range(primaries * (1 + replicas))]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def nodes(self) -> str:
        """REDIS_CLUSTER_NODES for this cluster (every node a seed)."""
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def _spawn(self, port: int) -> None:
        node_dir = self.directory / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(node_dir),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(self.node_timeout_ms),
                # a replica may take over however long its link was down (availability
                # first, as a chaos run wants: what it lacks is then reported)
                "--cluster-replica-validity-factor",
                "0",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--save",
                "",
                "--logfile",
                str(node_dir / "redis.log"),
                *(
                    ["--requirepass", self.password, "--masterauth", self.password]
                    if self.password
                    else []
                ),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_ping(self._url(port))

    def start(self) -> LocalCluster:
        """Start every node, create the cluster, wait until it serves every slot (on a
        failure the nodes started are stopped: nothing outlives the caller)."""
        try:
            self._create()
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self) -> None:
        for port in self.ports:
            self._spawn(port)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
                *(["-a", self.password, "--no-auth-warning"] if self.password else []),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        self.wait_ok()

    def wait_ok(self, seconds: float = 30) -> None:
        """Until every live node says cluster_state:ok and agrees on the primaries."""
        states: list[str] = []

        def ok() -> bool:
            states[:] = []
            for port in self.live_ports():
                try:
                    info = self._client(port).cluster("info")
                    states.append(str(info.get("cluster_state", "")))
                except redis.exceptions.RedisError:
                    states.append("down")
            return bool(states) and all(s == "ok" for s in states) and self._replicas_linked()

        wait_until(ok, seconds, lambda: f"the cluster to be ok: {states}", every=0.1)

    def _replicas_linked(self) -> bool:
        """Whether every live replica has finished syncing with its primary."""
        for port in self.live_ports():
            try:
                info = self._client(port).info("replication")
            except redis.exceptions.RedisError:
                return False
            if info.get("role") == "slave" and info.get("master_link_status") != "up":
                return False
        return True

    def _url(self, port: int) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{port}/0"

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis.from_url(self._url(port), socket_timeout=1)

    def live_ports(self) -> list[int]:
        """Ports of the nodes whose process runs."""
        return [p for p, proc in self.processes.items() if proc.poll() is None]

    def roles(self) -> dict[int, str]:
        """'master' or 'slave' for each live node, as the node itself says."""
        found: dict[int, str] = {}
        for port in self.live_ports():
            try:
                found[port] = str(self._client(port).info("replication")["role"])
            except redis.exceptions.RedisError:
                found[port] = "down"
        return found

    def fail_over(self, port: int, seconds: float = 60) -> int:
        """Kill -9 the primary at ``port`` and wait until a replica took over its slots
        (after the node timeout) and the cluster serves every slot again; the promoted
        replica's port. Restarting the killed node earlier would let it come back, empty,
        as the primary it was."""
        replicas = self.replicas_of(port)
        self.kill(port)
        promoted = wait_until(
            lambda: [p for p in replicas if self.roles().get(p) == "master"],
            seconds,
            f"a replica of {port} to take over",
            every=0.1,
        )
        self.wait_ok(seconds)  # (the killed primary's replicas: none left)
        return promoted[0]

    def replicas_of(self, port: int) -> list[int]:
        """Ports of the live replicas that replicate the primary at ``port``."""
        found = []
        for other in self.live_ports():
            try:
                info = self._client(other).info("replication")
            except redis.exceptions.RedisError:
                continue
            if info.get("role") == "slave" and int(info.get("master_port", 0)) == port:
                found.append(other)
        return found

    def node_id(self, port: int) -> str:
        """The cluster id of the node at ``port``."""
        return str(self._client(port).execute_command("CLUSTER", "MYID"), "utf-8")

    def owner(self, slot: int) -> int:
        """The port of the primary serving ``slot``, as the live nodes agree."""
        port = self.live_ports()[0]
        for start, end, primary, *_ in self._client(port).execute_command("CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                return int(primary[1])
        raise RuntimeError(f"no primary serves slot {slot}")

    def begin_migration(self, slot: int, source: int, target: int) -> None:
        """Mark ``slot`` migrating from ``source`` to ``target`` (step one of what
        `redis-cli --cluster reshard` does for each slot it moves)."""
        self._client(target).execute_command(
            "CLUSTER", "SETSLOT", slot, "IMPORTING", self.node_id(source)
        )
        self._client(source).execute_command(
            "CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(target)
        )

    def migrate_keys(self, source: int, target: int, names: list[str]) -> None:
        """MIGRATE these keys (of a migrating slot) from ``source`` to ``target``."""
        auth = ["AUTH", self.password] if self.password else []
        self._client(source).execute_command(
            "MIGRATE", "127.0.0.1", target, "", 0, 5000, *auth, "KEYS", *names
        )

    def end_migration(self, slot: int, source: int, target: int) -> None:
        """Move the slot's remaining keys and give the slot to ``target`` on every node."""
        client = self._client(source)
        while names := client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            self.migrate_keys(source, target, [str(n, "utf-8") for n in names])
        owner = self.node_id(target)
        primaries = [p for p, role in self.roles().items() if role == "master"]
        for port in dict.fromkeys((target, source, *primaries)):  # target first, as redis-cli
            self._client(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", owner)
        self.wait_ok()

    def move_slot(self, slot: int, target: int) -> None:
        """Reshard one slot, keys and all, to the primary at ``target``."""
        source = self.owner(slot)
        self.begin_migration(slot, source, target)
        self.end_migration(slot, source, target)

    def fail_over_gracefully(self, primary: int, seconds: float = 60) -> int:
        """CLUSTER FAILOVER on a replica of ``primary``: the two swap roles with no data
        lost, and the old primary's blocked clients are told so (UNBLOCKED). The port
        of the new primary."""
        (replica,) = self.replicas_of(primary)[:1]
        self._client(replica).execute_command("CLUSTER", "FAILOVER")
        wait_until(
            lambda: self.roles().get(replica) == "master" and self.roles().get(primary) == "slave",
            seconds,
            f"{replica} to take over from {primary}",
        )
        self.wait_ok(seconds)
        return replica

    def kill(self, port: int) -> None:
        """SIGKILL one node, as a crash would."""
        process = self.processes.get(port)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def restart(self, port: int) -> None:
        """Start a killed node again (it rejoins from its nodes.conf)."""
        self.kill(port)
        self._spawn(port)

    def stop(self) -> None:
        """Kill every node and remove nothing (the caller's tmp directory goes)."""
        for port in list(self.processes):
            self.kill(port)
