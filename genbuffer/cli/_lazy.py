"""Root options that cost nothing until they are given.

Typer builds a parameter's coercion (a pydantic TypeAdapter, so an import of
pydantic, ~100 ms) the first time the parameter is processed, even when its value
is None. The root group's options are processed before every sub-command, its
`--help` included; deferring their coercion to a value actually given keeps
`genbuf CMD --help` free of pydantic. Relies on typer's `_runtime_param` hook
and leaves parameters alone where a typer version lacks it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["defer_coercion"]


class _CoerceWhenGiven:
    """Stands in for typer's runtime coercion; builds the real one for a real value."""

    def __init__(self) -> None:
        self._real: Any = None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        """None stays None (as typer's coercion returns it); anything else goes to typer."""
        if value is None:
            return None
        if self._real is None:
            from typer._coercion import build_runtime_param

            self._real = build_runtime_param(param.type_descriptor)
        return self._real.coerce(value, param=param, ctx=ctx)


def defer_coercion(params: list[Any]) -> None:
    """Defer the coercion of ``params`` (typer parameters) until a value is given."""
    for param in params:
        if getattr(param, "_runtime_param", False) is None and hasattr(param, "type_descriptor"):
            param._runtime_param = _CoerceWhenGiven()
