"""What to compact and how: the generation, the operator's options, the buffer found.

A request is three ids and two small values: ``Options`` (what compact-generation's
options say: --delete, --strict/--soft, --dry-run, --force, --regeneration) and,
when an engine hands over a buffer a scan or an event named, ``Found``. The switches
may be given by name, as the public API always took them:
``CompactionRequest(org, gen, delete=True)`` is ``CompactionRequest(org, gen,
options=Options(delete=True))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict, Unpack

__all__ = ["CompactionRequest", "Found", "Options"]


@dataclass(frozen=True)
class Options:
    """How to compact, as compact-generation's options say it."""

    delete: bool = False  # trim what the commit holds; delete the keys once nothing is left
    strict: bool | None = None  # None: METADATA_VALIDATION_STRICT
    dry_run: bool = False  # a plan only: nothing written, acknowledged, announced or counted
    force: bool = False  # compact a quarantined generation anyway
    regeneration: str | None = None  # "replace" or "append"; None: GENERATION_REGENERATION


@dataclass(frozen=True)
class Found:
    """A buffer as a scan or an event named it (compact-pending, the worker): its key is
    the one its ids name exactly, never looked for under another scenario."""

    key: str | None = None  # the chunks key, used as it is; None: the key the ids name
    # why a scan chose it (finished, idle, at_risk): the artifact of a stream not marked
    # finished is provisional, and the row records why
    selected: str | None = None
    trim_later: bool = False  # --delete: the engine trims the commits in batches, not here


class _Switches(TypedDict, total=False):
    """The switches by name: ``Options``' fields, and ``Found``'s as the engine's callers
    spelled them (``exact_key``: the key the ids name; ``acknowledge`` False: trim later)."""

    delete: bool
    strict: bool | None
    dry_run: bool
    force: bool
    regeneration: str | None
    key: str | None
    exact_key: bool
    selected: str | None
    acknowledge: bool


_FOUND_SWITCHES = frozenset({"key", "exact_key", "selected", "acknowledge"})


@dataclass(frozen=True, init=False)
class CompactionRequest:
    """What to compact and how."""

    organization_id: int
    generation_id: int
    scenario_id: int | None
    options: Options
    found: Found | None  # None: the key is looked up (the row's scenario, or none)
    compacted_by: str  # recorded in compacted_by

    def __init__(
        self,
        organization_id: int,
        generation_id: int,
        scenario_id: int | None = None,
        *,
        options: Options | None = None,
        found: Found | None = None,
        compacted_by: str = "genbuf",
        **switches: Unpack[_Switches],
    ) -> None:
        """The ids, and ``options``/``found`` given whole or their switches by name."""
        named_found = _FOUND_SWITCHES & switches.keys()
        if (options is not None and switches.keys() - _FOUND_SWITCHES) or (
            found is not None and named_found
        ):
            raise TypeError("give options= and found= whole, or their switches by name")
        if options is None:
            options = Options(
                delete=switches.get("delete", False),
                strict=switches.get("strict"),
                dry_run=switches.get("dry_run", False),
                force=switches.get("force", False),
                regeneration=switches.get("regeneration"),
            )
        if found is None and (
            switches.get("key") is not None
            or switches.get("exact_key", False)
            or switches.get("selected") is not None
            or not switches.get("acknowledge", True)
        ):
            found = Found(
                key=switches.get("key"),
                selected=switches.get("selected"),
                trim_later=not switches.get("acknowledge", True),
            )
        object.__setattr__(self, "organization_id", organization_id)
        object.__setattr__(self, "generation_id", generation_id)
        object.__setattr__(self, "scenario_id", scenario_id)
        object.__setattr__(self, "options", options)
        object.__setattr__(self, "found", found)
        object.__setattr__(self, "compacted_by", compacted_by)

    # The switches read by name, as the callers that spell them by name read them
    # (the engine's request building); the pipeline reads ``options`` and ``found``.

    @property
    def delete(self) -> bool:
        """``options.delete``."""
        return self.options.delete

    @property
    def strict(self) -> bool | None:
        """``options.strict``."""
        return self.options.strict

    @property
    def dry_run(self) -> bool:
        """``options.dry_run``."""
        return self.options.dry_run

    @property
    def force(self) -> bool:
        """``options.force``."""
        return self.options.force

    @property
    def regeneration(self) -> str | None:
        """``options.regeneration``."""
        return self.options.regeneration

    @property
    def key(self) -> str | None:
        """``found.key`` (None: no buffer was found, or none named)."""
        return None if self.found is None else self.found.key

    @property
    def exact_key(self) -> bool:
        """Whether the key is the one the ids name exactly (a found buffer's)."""
        return self.found is not None

    @property
    def selected(self) -> str | None:
        """``found.selected``."""
        return None if self.found is None else self.found.selected

    @property
    def acknowledge(self) -> bool:
        """Whether --delete trims here (not ``found.trim_later``)."""
        return self.found is None or not self.found.trim_later
