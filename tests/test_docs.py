"""The README stays true: its command list is the app's, and each has an example."""

from __future__ import annotations

import re

import typer.main

from genbuffer.cli import app
from genbuffer.settings import Settings
from tests.support.urls import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def _app_commands() -> set[str]:
    group = typer.main.get_command(app)
    names: set[str] = set()
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        sub = getattr(command, "commands", None)
        names |= {f"{name} {s}" for s in sub} if sub else {name}
    return names


def test_readme_documents_exactly_the_commands_of_the_app() -> None:
    """Every `### genbuf X` heading is a command, and every command has one."""
    documented = set(re.findall(r"^### `genbuf ([a-z -]+)`$", README, re.MULTILINE))
    assert documented == _app_commands()


def test_readme_has_an_example_for_every_command() -> None:
    """Each command appears in a ```bash example line."""
    for command in _app_commands():
        assert re.search(rf"^genbuf( --env-file \S+)? {command}\b", README, re.MULTILINE), command


def test_readme_configuration_table_covers_every_setting() -> None:
    """Every Settings field is in the configuration table."""
    for name in Settings.model_fields:
        assert f"`{name.upper()}`" in README, name


def test_readme_names_the_two_setup_commands() -> None:
    """The two set-up commands are the ones the Makefile provides."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in README and re.search(rf"^{target}:", makefile, re.MULTILINE)


def test_readme_layout_lists_every_module() -> None:
    """The Layout section names every module of the package (a moved module shows)."""
    layout = README.split("## Layout", 1)[1]
    package = REPO_ROOT / "genbuffer"
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(REPO_ROOT).as_posix()
        if relative.startswith("genbuffer/cli/") or relative == "genbuffer/db/__init__.py":
            continue  # one module per command: the section names the package
        if relative.startswith("genbuffer/lua/") and path.with_suffix(".lua").exists():
            continue  # the typed call beside each script: the section names the rule
        assert relative in layout, relative
