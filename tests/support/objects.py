"""A real S3-protocol server for the tests: moto's server, in a process of its own."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from tests.support.servers import free_port
from tests.support.wait import wait_until

ACCESS_KEY = "genbuf-test"
SECRET_KEY = "genbuf-test-secret"
REGION = "us-east-1"


class S3Server:
    """`python -m moto.server` on a loopback port; buckets made per test."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(self._answers, 30, "moto's S3 server to answer", every=0.1)
        except AssertionError as failed:
            self.stop()
            raise RuntimeError(f"moto's S3 server did not start (log: {log}): {failed}") from None

    def _answers(self) -> bool:
        """Whether the server answers (it must not have exited)."""
        assert self.process.poll() is None, "moto's S3 server exited"
        try:
            urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()  # noqa: S310
        except (urllib.error.URLError, OSError):
            return False
        return True

    def create_bucket(self) -> str:
        """A new, empty bucket's name."""
        name = f"genbuf-{uuid.uuid4().hex[:12]}"
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")  # noqa: S310
        urllib.request.urlopen(request, timeout=10).close()  # noqa: S310  (our own http endpoint)
        return name

    def put_object(self, bucket: str, key: str, data: bytes) -> None:
        """Write an object straight to the server (not through genbuf), and check that
        the server holds all of it (moto stores an empty object for a form upload)."""
        import obstore  # noqa: PLC0415
        from obstore.store import S3Store  # noqa: PLC0415

        store = S3Store(
            bucket,
            endpoint=self.endpoint,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            region=REGION,
            client_options={"allow_http": True},
        )
        obstore.put(store, key, data)
        stored = obstore.head(store, key)["size"]
        if stored != len(data):
            raise AssertionError(f"s3://{bucket}/{key}: {len(data)} bytes put, {stored} stored")

    def requests_for(self, bucket: str) -> list[str]:
        """The request lines of the server's log that name ``bucket`` (what was asked of it)."""
        lines = self.log.read_text(errors="replace").splitlines()
        return [line for line in lines if f" /{bucket}/" in line or f" /{bucket}?" in line]

    def env(self, bucket: str, prefix: str = "artifacts") -> dict[str, str]:
        """The settings of a genbuf offloading to ``bucket`` on this server."""
        return {
            "GENERATION_OFFLOAD_URL": f"s3://{bucket}/{prefix}",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def stop(self) -> None:
        """Stop the server."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
