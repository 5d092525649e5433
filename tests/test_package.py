"""genbuffer as an operator installs it: the built wheel, in a fresh venv, run from /tmp."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.support.urls import REDIS_TEST_URL, REPO_ROOT

pytestmark = pytest.mark.slow
# what a checkout holds besides the sources
NOT_SOURCES = (".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")
NOT_SOURCES += (".hypothesis", "storage")


def _run(args: list[str], cwd: Path, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(args, cwd=cwd, capture_output=True, check=False, timeout=300, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, (args, done.stdout.decode()[-2000:], done.stderr.decode()[-2000:])
    return done


def test_the_built_wheel_works_outside_the_repository(tmp_path: Path, redis_prefix: str) -> None:
    """pip wheel, a fresh venv, `pip install` of the wheel (not editable); from another
    folder: `genbuf db upgrade` migrates, and a push and a compaction round-trip on the
    real Redis, in separate processes."""
    dist = tmp_path / "dist"
    # built from a copy of the sources: setuptools' build/ in a checkout keeps files
    # that were renamed or deleted since (a migration renumbered: two Alembic heads)
    source = tmp_path / "source"
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(source),
        ],
        tmp_path,
    )
    (wheel,) = dist.glob("genbuffer-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "genbuffer/migrations/env.py" in names and "genbuffer/lua/snapshot.lua" in names
    assert "genbuffer/objects/store.py" in names and "genbuffer/engine/run.py" in names
    # every package of the sources (pyproject.toml lists them: a new one must be added)
    packages = {
        path.relative_to(REPO_ROOT).as_posix()
        for path in (REPO_ROOT / "genbuffer").rglob("__init__.py")
        if "__pycache__" not in path.parts
    }
    assert packages - set(names) == set()
    assert any(n.startswith("genbuffer/migrations/versions/0003") for n in names)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    # the dependencies come from the test venv (read as a plain path: its editable
    # genbuffer is not seen), the package itself only from the wheel
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        tmp_path,
    )
    where = _run(
        [str(venv / "bin" / "python"), "-c", "import genbuffer; print(genbuffer.__file__)"],
        tmp_path,
    )
    assert where.stdout.decode().startswith(str(venv))

    work = tmp_path / "elsewhere"
    work.mkdir()
    env_file = work / ".env"
    env_file.write_text(
        f"REDIS_URL={REDIS_TEST_URL}\nREDIS_PREFIX={redis_prefix}\n"
        f"DB_CONNECTION=sqlite\nDB_DATABASE={work / 'app.sqlite'}\n"
        f"METADATA_VALIDATION_LOG={work / 'audit.log'}\n"
    )
    genbuf = [str(venv / "bin" / "genbuf"), "--env-file", str(env_file)]
    upgraded = _run([*genbuf, "db", "upgrade", "--json"], work, env={"PATH": "/usr/bin:/bin"})
    assert json.loads(upgraded.stdout)["revision"] == "0005"
    checked = _run([*genbuf, "db", "check", "--json"], work, env={"PATH": "/usr/bin:/bin"})
    assert json.loads(checked.stdout)["ok"]
    smoke = _run([*genbuf, "test-redis-buffer", "--json"], work, env={"PATH": "/usr/bin:/bin"})
    assert json.loads(smoke.stdout)["ok"]
    with sqlite3.connect(work / "app.sqlite") as db:  # the app creates its rows
        db.execute("INSERT INTO scenario_generations (id, organization_id) VALUES (59, 12)")
    payload = '{"plan": "Lisboa ñ",\n "steps": [1, 2]}\n'.encode()
    _run([*genbuf, "push", "12", "59", "--finish"], work, input=payload, env={"PATH": "/bin"})
    done = _run([*genbuf, "compact-generation", "12", "59", "--delete", "--json"], work, env={})
    out = json.loads(done.stdout)
    assert out["ok"] and out["deleted"] and out["sha256"] == hashlib.sha256(payload).hexdigest()
    pending = _run([*genbuf, "compact-pending", "--json"], work, env={})  # the engine
    assert json.loads(pending.stdout)["buffers"] == 0

    # offloaded (a directory as the store, zstd) and read back by another process
    with sqlite3.connect(work / "app.sqlite") as db:
        db.execute("INSERT INTO scenario_generations (id, organization_id) VALUES (60, 12)")
    with env_file.open("a") as handle:
        handle.write(
            f"GENERATION_OFFLOAD_URL=file://{work / 'objects'}\nGENERATION_OFFLOAD_BYTES=16\n"
            "GENERATION_OFFLOAD_COMPRESSION=zstd\n"
        )
    _run([*genbuf, "push", "12", "60", "--finish"], work, input=payload, env={"PATH": "/bin"})
    _run([*genbuf, "compact-generation", "12", "60", "--delete"], work, env={})
    shown = _run([*genbuf, "show-generation", "12", "60", "--json"], work, env={})
    facts = json.loads(shown.stdout)
    assert facts["offloaded"].startswith(f"file://{work / 'objects'}/org-12/gen-60/")
    assert facts["compression"] == "zstd" and facts["verified"]
    back = _run([*genbuf, "show-generation", "12", "60"], work, env={})
    assert back.stdout == payload
