"""Adversarial: rows naming objects outside the configured store (the trust boundary).

Whoever can write a `scenario_generations` row (the app, or an SQL injection into it)
and push to Redis must not make genbuf read, copy or disclose anything outside the
stores its settings name. Each test plays an attack against real processes (real
Redis and PostgreSQL, a directory, moto's S3 server) and checks that nothing was
read, uploaded or disclosed: not in stdout, stderr, the JSON, the compaction ledger,
the buffer's meta hash or the store.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from genbuffer import keys
from genbuffer.db.rows import GEN, LEDGER
from genbuffer.objects.store import open_store
from tests.conftest import Stack
from tests.support.objects import S3Server
from tests.support.runner import run_genbuf

ORG = 41
THRESHOLD = 4096
CLAIMED_SHA = "ab" * 32  # what a hostile row claims its object hashes to
SECRET_SIZE = 104_729  # the secret's size: a number no other output holds by chance


@dataclass(frozen=True)
class Secret:
    """A file genbuf must never read: an app's .env, mode 600."""

    path: Path
    content: bytes

    @property
    def sha256(self) -> str:
        """Its digest (what today's mismatch message disclosed)."""
        return hashlib.sha256(self.content).hexdigest()

    def disclosed_in(self, *texts: str) -> list[str]:
        """What of the secret the texts hold: its content, digest or size."""
        markers = {"content": "s3cr3t-DB-pa55", "sha256": self.sha256, "size": str(SECRET_SIZE)}
        return [name for name, marker in markers.items() for text in texts if marker in text]


@pytest.fixture
def secret(tmp_path: Path) -> Secret:
    """The secret, beside (not in) the store's directory."""
    head = b"DB_PASSWORD=s3cr3t-DB-pa55\nAWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG\n"
    content = head + b"#" * (SECRET_SIZE - len(head))
    path = tmp_path / "app" / ".env"
    path.parent.mkdir()
    path.write_bytes(content)
    path.chmod(0o600)
    return Secret(path, content)


def file_store(stack: Stack, tmp_path: Path) -> Path:
    """The stack offloading to a directory; its path."""
    directory = tmp_path / "objects"
    stack.env.update(
        GENERATION_OFFLOAD_URL=f"file://{directory}", GENERATION_OFFLOAD_BYTES=str(THRESHOLD)
    )
    return directory


def point_row_at(stack: Stack, gen: int, url: str, *, sha256: str = CLAIMED_SHA) -> None:
    """What an SQL injection writes: the row's artifact is the object at ``url``, with an
    `offloaded` record as genbuf writes one (its buffer record, if any, kept)."""
    row = stack.repository.get_generation(gen)
    assert row is not None
    metadata: dict[str, Any] = dict(row.metadata or {})
    metadata["offloaded"] = {
        "url": url,
        "bytes": 1,
        "sha256": sha256,
        "compression": "none",
        "content_type": "text/plain",
        "stored_bytes": 1,
    }
    metadata.update(sha256=sha256, bytes=1)
    with stack.repository.engine.begin() as connection:
        connection.execute(
            update(GEN).where(GEN.c.id == gen).values(compacted=url, metadata=metadata)
        )


def show_three_ways(stack: Stack, gen: int, tmp_path: Path) -> list[tuple[int, str, str]]:
    """show-generation to stdout, with --json, and with --output: (exit, stdout, stderr)."""
    out = tmp_path / "shown.bin"
    runs = []
    for extra in ([], ["--json"], ["--output", str(out)]):
        done = run_genbuf(["show-generation", str(ORG), str(gen), *extra], stack.env)
        runs.append((done.returncode, done.stdout, done.stderr))
    assert not out.exists() and list(tmp_path.glob(".shown.bin.*")) == []
    return runs


def assert_refused(runs: list[tuple[int, str, str]], secret: Secret | None = None) -> None:
    """Each run: exit 4, one `error:` line and its hint, no traceback, nothing disclosed."""
    for code, out, err in runs:
        assert code == 4, (code, out[:300], err[:600])
        assert err.startswith("error: ") and "refused" in err and "nothing was read" in err
        assert len(err.strip().splitlines()) == 2 and "Traceback" not in err
        if out:
            document = json.loads(out)
            assert document["ok"] is False and document["error"]["type"] == "ObjectRefused"
            assert document["error"]["exit_code"] == 4
        if secret is not None:
            assert secret.disclosed_in(out, err) == []


@pytest.mark.parametrize(
    "how", ["outside", "dot-dot", "percent", "percent-slash", "symlink", "symlinked-dir"]
)
def test_show_generation_reads_no_file_outside_the_store(
    servers: Stack, tmp_path: Path, secret: Secret, how: str
) -> None:
    """A row naming a file outside the store, the store's path with `..`, percent-encoded
    `..` or `/`, or a symlink in the store (to the file, or to its directory): refused
    before a byte is read, to a terminal, --json and --output alike. Today the file is
    printed, or its digest and size are in the mismatch message, or `..` is a ValueError
    traceback."""
    store = file_store(servers, tmp_path)
    gen = servers.repository.create_generation(ORG)
    name = f"org-{ORG}/gen-{gen}/{CLAIMED_SHA}"  # the name genbuf would give it
    (store / f"org-{ORG}").mkdir(parents=True)
    if how == "symlink":  # the object is a symlink to the secret
        (store / name).parent.mkdir()
        (store / name).symlink_to(secret.path)
    if how == "symlinked-dir":  # its directory is a symlink to the secret's
        (secret.path.parent / CLAIMED_SHA).write_bytes(secret.content)
        (store / name).parent.symlink_to(secret.path.parent, target_is_directory=True)
    url = {
        "outside": f"file://{secret.path}",
        "dot-dot": f"file://{store}/org-{ORG}/gen-{gen}/../../../app/.env",
        "percent": f"file://{store}/org-{ORG}/gen-{gen}/%2e%2e/%2e%2e/%2e%2e/app/.env",
        "percent-slash": f"file://{store}%2f..%2fapp%2f.env",
        "symlink": f"file://{store}/{name}",
        "symlinked-dir": f"file://{store}/{name}",
    }[how]
    point_row_at(servers, gen, url)
    runs = show_three_ways(servers, gen, tmp_path)
    assert_refused(runs, secret)
    said = {"outside": "GENERATION_OFFLOAD_READ_URLS", "symlink": "symlink"}.get(how, "")
    said = "symlink" if how == "symlinked-dir" else said
    assert said in runs[0][2], (how, runs[0][2])


@pytest.mark.parametrize(
    "how", ["other bucket", "outside the prefix", "dot-dot", "another generation", "detour"]
)
def test_show_generation_reads_nothing_from_another_bucket(
    servers: Stack, tmp_path: Path, s3_server: S3Server, secret: Secret, how: str
) -> None:
    """With the store s3://A/artifacts: a row naming an object of another bucket, of the
    same bucket outside the prefix, with `..`, or another generation's object (directly,
    or by a `..` detour): refused, and the S3 server is asked nothing about it (its
    request log). Today each is read with the configured credentials."""
    bucket, other = s3_server.create_bucket(), s3_server.create_bucket()
    servers.env.update(s3_server.env(bucket), GENERATION_OFFLOAD_BYTES=str(THRESHOLD))
    s3_server.put_object(other, "private/payroll.csv", secret.content)
    s3_server.put_object(bucket, "private/payroll.csv", secret.content)
    neighbour = servers.repository.create_generation(ORG)
    servers.buffer.push_many(ORG, neighbour, [b"n" * (THRESHOLD + 1)])
    done = run_genbuf(["compact-generation", str(ORG), str(neighbour)], servers.env)
    assert done.returncode == 0, done.stderr
    row = servers.repository.get_generation(neighbour)
    assert row is not None and row.compacted is not None
    gen = servers.repository.create_generation(ORG)
    url = {
        "other bucket": f"s3://{other}/private/payroll.csv",
        "outside the prefix": f"s3://{bucket}/private/payroll.csv",
        "dot-dot": f"s3://{bucket}/artifacts/../private/payroll.csv",
        "another generation": row.compacted,
        "detour": f"s3://{bucket}/artifacts/org-{ORG}/gen-{gen}/../gen-{neighbour}/"
        + row.compacted.rsplit("/", 1)[1],
    }[how]
    asked = len(s3_server.requests_for(bucket))
    point_row_at(servers, gen, url)
    assert_refused(show_three_ways(servers, gen, tmp_path), secret)
    assert [line for line in s3_server.requests_for(other) if "GET" in line] == []
    assert [line for line in s3_server.requests_for(bucket)[asked:] if "GET" in line] == []


def _failures(stack: Stack, gen: int) -> list[str]:
    """The messages of the generation's failed compactions in the ledger."""
    with stack.repository.engine.connect() as connection:
        found = connection.execute(
            select(LEDGER.c.message).where(
                LEDGER.c.generation_id == gen, LEDGER.c.result == "failed"
            )
        )
        return [message or "" for message in found.scalars()]


@pytest.mark.parametrize("where", ["file", "bucket"])
def test_compaction_copies_nothing_into_the_store(
    servers: Stack, tmp_path: Path, s3_server: S3Server, secret: Secret, where: str
) -> None:
    """The issue's second attack: a row naming the secret (a file, or another bucket's
    object) as its offloaded artifact, a chunk pushed, compact-pending, then the digest and
    size written into the row and compact-generation --delete. Today the first run puts
    the secret's digest and size in the ledger and the meta hash's last_error, and the
    second uploads the secret plus the chunk as a new object. Now both are refused:
    nothing uploaded, nothing disclosed, not counted toward quarantine, buffer kept."""
    if where == "file":
        file_store(servers, tmp_path)
        url = f"file://{secret.path}"
    else:
        bucket, other = s3_server.create_bucket(), s3_server.create_bucket()
        servers.env.update(s3_server.env(bucket), GENERATION_OFFLOAD_BYTES=str(THRESHOLD))
        s3_server.put_object(other, "app/.env", secret.content)
        url = f"s3://{other}/app/.env"
    servers.env["COMPACTION_MAX_ATTEMPTS"] = "1"
    store = open_store(servers.env["GENERATION_OFFLOAD_URL"], servers.settings)
    gen = servers.repository.create_generation(ORG)
    servers.buffer.push_many(ORG, gen, [b'{"a": 1'])
    first = run_genbuf(["compact-generation", str(ORG), str(gen)], servers.env)
    assert first.returncode == 0, first.stderr  # in the row; its buffer record: not closed
    point_row_at(servers, gen, url)
    servers.buffer.push_many(ORG, gen, [b', "b": 2}'])
    servers.buffer.finish(ORG, gen)
    key = servers.buffer.key_for(ORG, gen, None)

    for _ in range(2):  # twice: a refusal is no attempt, so never a quarantine
        done = run_genbuf(["compact-pending", "--json"], servers.env)
        assert done.returncode == 1, done.stderr
        assert "refused" in done.stdout and "Traceback" not in done.stderr
        document = json.loads(done.stdout)
        assert document["skipped_quarantined"] == 0 and len(document["failures"]) == 1
        assert secret.disclosed_in(done.stdout, done.stderr) == []
    told = run_genbuf(["compact-pending"], servers.env)  # as a person reads it, once
    assert f"failed: generation {gen}: refused" in told.stdout, told.stdout
    assert f"generation {gen}: generation {gen}" not in told.stdout
    assert secret.disclosed_in(told.stdout, told.stderr) == []
    messages = _failures(servers, gen)
    assert len(messages) == 3 and all("refused" in m for m in messages), messages
    assert secret.disclosed_in(*messages) == []
    meta = {
        k.decode(): v.decode("utf-8", "replace")
        for k, v in servers.buffer.client.hgetall(keys.meta_key(key)).items()
    }
    assert "attempts" not in meta and "last_error" not in meta, meta
    assert secret.disclosed_in(*meta.values()) == []

    point_row_at(servers, gen, url, sha256=secret.sha256)  # what today's message told
    done = run_genbuf(["compact-generation", str(ORG), str(gen), "--delete", "--json"], servers.env)
    assert done.returncode == 4, done.stderr
    assert json.loads(done.stdout)["error"]["type"] == "ObjectRefused"
    assert secret.disclosed_in(done.stdout, done.stderr) == []
    assert list(store.objects()) == []  # nothing uploaded
    assert servers.buffer.keyspace.list_length(key) == 2  # the buffer is kept
    row = servers.repository.get_generation(gen)
    assert row is not None and row.compacted == url  # the row is as the attacker left it


def test_purge_objects_follows_no_symlink_out_of_the_store(servers: Stack, tmp_path: Path) -> None:
    """A directory in the store that is a symlink to elsewhere, holding a file by a genbuf
    name: purge-objects leaves it (foreign); today it deletes the file outside the store."""
    store = file_store(servers, tmp_path)
    store.mkdir()
    elsewhere = tmp_path / "elsewhere"
    victim = elsewhere / "gen-1" / ("cd" * 32)
    victim.parent.mkdir(parents=True)
    victim.write_bytes(b"not genbuf's")
    os.utime(victim, (0, 0))  # old: past any grace period
    (store / "org-99").symlink_to(elsewhere, target_is_directory=True)
    done = run_genbuf(["purge-objects", "--grace", "0s", "--json"], servers.env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["deleted"], summary["foreign"]) == (0, 1)
    assert victim.read_bytes() == b"not genbuf's"


def test_malformed_store_urls_are_bad_settings(servers: Stack) -> None:
    """A bucket with a space (today a PanicException traceback from obstore's request
    signer, once a large artifact is uploaded), `..` in a store URL, a bad earlier store
    or an unknown group: one line naming the setting, exit 2, before anything is read."""
    gen = servers.repository.create_generation(ORG)
    servers.buffer.push_many(ORG, gen, [b"x" * (THRESHOLD + 1)])
    env = {
        **servers.env,
        "GENERATION_OFFLOAD_BYTES": str(THRESHOLD),
        "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "b",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }
    bad = {
        "GENERATION_OFFLOAD_URL": "s3://bad bucket/x",
        "GENERATION_OFFLOAD_READ_URLS": "s3://fine/x, file:///srv/../etc",
        "GENERATION_OFFLOAD_FILE_GROUP": "no-such-group-genbuf",
    }
    for name, value in bad.items():
        run_env = {"GENERATION_OFFLOAD_URL": "s3://good-bucket/x", **env, name: value}
        done = run_genbuf(["compact-generation", str(ORG), str(gen)], run_env)
        assert done.returncode == 2, (name, done.stderr)
        assert done.stderr.startswith(f"error: invalid setting {name}: "), done.stderr
        assert "Traceback" not in done.stderr and "Panic" not in done.stderr
    row = servers.repository.get_generation(gen)
    assert row is not None and row.compacted is None
