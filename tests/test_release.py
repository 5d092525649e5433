"""A release: `genbuf --version`, the package's metadata, `__version__` and the CHANGELOG's
latest released version are one number, and each version lists each kind of change once."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import genbuffer
from tests.support.urls import REPO_ROOT

CHANGELOG = (REPO_ROOT / "CHANGELOG.md").read_text()
# `## [0.2.0] - 2026-12-05`, `## [Unreleased]`
VERSION_HEADING = re.compile(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", re.MULTILINE)
KINDS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security", "Documentation"}


def _sections() -> list[tuple[str, str]]:
    """(version, text) for each `## [...]` section of the CHANGELOG, top first."""
    marks = list(VERSION_HEADING.finditer(CHANGELOG))
    ends = [m.start() for m in marks[1:]] + [len(CHANGELOG)]
    return [(m.group(1), CHANGELOG[m.end() : end]) for m, end in zip(marks, ends, strict=True)]


def test_genbuf_version_is_the_package_version_and_the_latest_release() -> None:
    """`genbuf --version` (the installed command) prints the installed distribution's
    version, which is `genbuffer.__version__` and the CHANGELOG's first released version."""
    genbuf = Path(sys.executable).with_name("genbuf")
    done = subprocess.run(
        [str(genbuf), "--version"], capture_output=True, text=True, check=True, timeout=60
    )
    installed = version("genbuffer")
    # a stale installed version: `make venv` reinstalls when pyproject.toml or
    # __version__ changes (pip install -e . by hand otherwise)
    assert installed == genbuffer.__version__
    assert done.stdout == f"genbuf {installed}\n"
    released = [v for v, _ in _sections() if v != "Unreleased"]
    assert released and released[0] == genbuffer.__version__, released[:1]


def test_changelog_versions_are_keep_a_changelog_sections() -> None:
    """An Unreleased section on top, then released versions with a date, newest first;
    each version names each kind of change (`### Added`, ...) at most once."""
    sections = _sections()
    assert sections[0][0] == "Unreleased"
    released = [tuple(int(n) for n in v.split(".")) for v, _ in sections[1:]]
    assert released == sorted(released, reverse=True) and len(set(released)) == len(released)
    for match in VERSION_HEADING.finditer(CHANGELOG):
        if match.group(1) != "Unreleased":
            assert re.fullmatch(r"\d+\.\d+\.\d+", match.group(1)), match.group(0)
            assert match.group(2), f"{match.group(0)}: no date"
    for name, text in sections:
        kinds = re.findall(r"^### (.+)$", text, re.MULTILINE)
        assert len(kinds) == len(set(kinds)), (name, kinds)
        assert set(kinds) <= KINDS, (name, set(kinds) - KINDS)
