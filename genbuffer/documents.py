"""Document: the base of every result a command prints (as rich or as --json)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Document"]


class Document(BaseModel):
    """A command's result. Its validators are built on first use, not at import: a
    command imports many result models and uses one (start-up time)."""

    model_config = ConfigDict(defer_build=True)
