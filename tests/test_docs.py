"""The docs stay true: the command list is the app's, each command has an example, the
generated references are current, every link resolves, and every Python block runs."""

from __future__ import annotations

import importlib.util
import re
import uuid
from pathlib import Path
from types import ModuleType

import pytest

from genbuffer.settings import Settings
from tests.support.urls import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()
CONTRIBUTING = (REPO_ROOT / "CONTRIBUTING.md").read_text()
DOCS = REPO_ROOT / "docs"
COMMANDS = (DOCS / "commands.md").read_text()
PAGES = sorted([REPO_ROOT / "README.md", REPO_ROOT / "CONTRIBUTING.md", *DOCS.glob("*.md")])
# ```python blocks run; ```python no-run (or any other word after python) does not
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
FENCE = re.compile(r"^```.*?^```$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", REPO_ROOT / "scripts/gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _app_commands() -> set[str]:
    """Every command that runs (a group's sub-commands, not the group), as its words."""
    paths = [" ".join(path) for path in _gen_docs().command_paths() if path]
    return {path for path in paths if not any(other.startswith(f"{path} ") for other in paths)}


def test_commands_page_documents_exactly_the_commands_of_the_app() -> None:
    """Every `## genbuf X` heading of docs/commands.md is a command, and every command has one."""
    documented = set(re.findall(r"^## `genbuf ([a-z -]+)`$", COMMANDS, re.MULTILINE))
    assert documented == _app_commands()


def test_commands_page_has_an_example_for_every_command() -> None:
    """Each command appears in a ```bash example line."""
    for command in _app_commands():
        assert re.search(rf"^genbuf( --env-file \S+)? {command}\b", COMMANDS, re.MULTILINE), command


def test_cli_reference_holds_every_commands_help() -> None:
    """docs/cli.md has a section, with its --help, for the root and every command."""
    reference = (DOCS / "cli.md").read_text()
    for command in _app_commands():
        assert f"## genbuf {command}\n" in reference, command
        assert f"$ genbuf {command} --help\nUsage: genbuf {command} " in reference, command


def test_every_setting_has_a_description_in_the_settings_page() -> None:
    """Every Settings field says what it means, and docs/settings.md shows it."""
    page = (DOCS / "settings.md").read_text()
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"
        assert f"| `{name.upper()}` |" in page, name


def test_generated_pages_are_current() -> None:
    """What `make docs` would write is what is checked in (make lint checks it too)."""
    gen_docs = _gen_docs()
    for name, render in gen_docs.PAGES.items():
        assert (DOCS / name).read_text() == render(), f"docs/{name} is stale: run `make docs`"


def test_a_stale_page_fails_the_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--check exits 1 naming the stale file and `make docs`, and writes nothing."""
    gen_docs = _gen_docs()
    gen_docs.ROOT = tmp_path
    gen_docs.DOCS = tmp_path / "docs"
    gen_docs.DOCS.mkdir()
    for name in gen_docs.PAGES:
        (gen_docs.DOCS / name).write_text((DOCS / name).read_text())
    assert gen_docs.main(["--check"]) == 0
    (gen_docs.DOCS / "settings.md").write_text("old\n")
    assert gen_docs.main(["--check"]) == 1
    said = capsys.readouterr().err
    assert said == "docs/settings.md is stale: run `make docs` to regenerate it\n"
    assert (gen_docs.DOCS / "settings.md").read_text() == "old\n"


def test_readme_is_short_and_names_the_two_setup_commands() -> None:
    """The README stays an overview, and its set-up commands are the Makefile's."""
    assert len(README.splitlines()) <= 200
    makefile = (REPO_ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in README and re.search(rf"^{target}:", makefile, re.MULTILINE)


def test_readme_links_every_docs_page() -> None:
    """Each page of docs/ is reachable from the README."""
    for page in DOCS.glob("*.md"):
        assert f"(docs/{page.name})" in README, page.name


def test_contributing_layout_lists_every_module() -> None:
    """The Layout section names every module of the package (a moved module shows)."""
    layout = CONTRIBUTING.split("## Layout", 1)[1].split("\n## ", 1)[0]
    package = REPO_ROOT / "genbuffer"
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(REPO_ROOT).as_posix()
        if relative.startswith("genbuffer/cli/") or relative == "genbuffer/db/__init__.py":
            continue  # one module per command: the section names the package
        if relative.startswith("genbuffer/lua/") and path.with_suffix(".lua").exists():
            continue  # the typed call beside each script: the section names the rule
        assert relative in layout, relative


def test_contributing_names_every_make_target() -> None:
    """Every target of the Makefile's .PHONY line is in the make targets table."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    phony = re.search(r"^\.PHONY: (.*)$", makefile, re.MULTILINE)
    assert phony is not None
    for target in phony.group(1).split():
        assert f"| `make {target}` |" in CONTRIBUTING, target


def _anchors(text: str) -> set[str]:
    """GitHub's anchors for the headings of a page (outside code blocks)."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", FENCE.sub("", text), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO_ROOT).as_posix())
def test_links_resolve(page: Path) -> None:
    """Every relative link names a file that exists, and a heading there if it has #."""
    text = FENCE.sub("", page.read_text())
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target}"
        if anchor:
            assert anchor in _anchors(linked.read_text()), f"{page.name}: {target}"


def _blocks(page: Path) -> list[tuple[int, str]]:
    """The runnable Python blocks of a page, with the line each starts on."""
    text = page.read_text()
    return [
        (text.count("\n", 0, match.start(1)) + 1, match.group(1))
        for match in PYTHON_BLOCK.finditer(text)
    ]


def test_the_library_pages_have_runnable_examples() -> None:
    """The README's example and the Python API page run (the next test runs them)."""
    assert _blocks(REPO_ROOT / "README.md")
    assert len(_blocks(DOCS / "python-api.md")) >= 5


@pytest.mark.parametrize(
    "page",
    [page for page in PAGES if _blocks(page)],
    ids=lambda page: page.relative_to(REPO_ROOT).as_posix(),
)
def test_python_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page's Python blocks run in order, in one namespace, against an in-process Redis
    and a SQLite file whose tables `genbuf db upgrade` made."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("GENBUF_ENV_FILE", raising=False)
    monkeypatch.setenv("REDIS_URL", f"memory://docs-{uuid.uuid4().hex}")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'docs.sqlite3'}")
    monkeypatch.setenv("METADATA_VALIDATION_LOG", str(tmp_path / "audit.log"))
    monkeypatch.chdir(tmp_path)

    from genbuffer import Repository, load_settings  # noqa: PLC0415
    from genbuffer.db.upgrade import upgrade  # noqa: PLC0415

    repository = Repository.from_settings(load_settings())
    upgrade(repository.engine, repository.url)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for line, code in _blocks(page):
        where = f"{page.relative_to(REPO_ROOT)}, the block at line {line}"
        exec(compile(code, where, "exec"), namespace)  # noqa: S102  (the docs' own examples)


def test_installing_creates_the_venv_the_cron_lines_and_the_unit_run() -> None:
    """Every virtualenv the cron lines (`cd DIR && … .venv/bin/genbuf`) and the systemd
    unit (`ExecStart=DIR/.venv/bin/genbuf`) run genbuf from is created, and genbuf
    installed into it, by commands the docs give."""
    docs = [README, *(p.read_text() for p in sorted((REPO_ROOT / "docs").rglob("*.md")))]
    text = "\n".join(docs)
    used = set(re.findall(r"cd (/\S+) && \S+ \.venv/bin/genbuf ", text))
    used |= set(re.findall(r"^ExecStart=(/\S+)/\.venv/bin/genbuf ", text, re.MULTILINE))
    assert used == {"/opt/genbuffer"}
    for home in used:
        assert re.search(rf"^python3 -m venv {home}/\.venv\b", text, re.MULTILINE), home
        assert re.search(rf"^{home}/\.venv/bin/pip install \S", text, re.MULTILINE), home
