"""A private redis-server a test can kill and restart (AOF, fsync always: no acked write lost)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import redis

from tests.support.wait import wait_until


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_ping(url: str, seconds: float = 15) -> None:
    """Until the Redis at ``url`` answers PING (its AOF is replayed first)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.exceptions.RedisError:
            return False

    wait_until(answers, seconds, f"the Redis at {url} to answer PING")
    client.close()


class PrivateRedis:
    """One redis-server process on its own port and directory (``binary``: another
    server speaking the protocol, e.g. valkey-server)."""

    def __init__(self, directory: Path, *extra: str, binary: str | None = None) -> None:
        binary = binary or shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.extra = list(extra)  # more redis-server options, e.g. "--maxmemory", "1mb"

    def start(self) -> None:
        """Start the server and wait until it answers (its AOF is replayed first)."""
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                str(self.directory / "redis.log"),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_ping(self.url)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> None:
        """Kill and start again on the same port and data."""
        self.kill()
        self.start()
