"""The Redis key scheme: the only place a key is built or parsed.

Chunks (list)::

    {prefix}app:scenario_planning:org:{org}:scenario:{scenario}:generation:{gen}:chunks
    {prefix}app:scenario_planning:org:{org}:generation:{gen}:chunks

Metadata (hash): the chunks key + ``:meta``. The prefix is Laravel's
``REDIS_PREFIX``; it is prepended here exactly once, and keys that come back
from SCAN already carry it, so they are used as they are.

On a Redis Cluster the two keys hash to different slots. The opt-in tagged
template (``GENERATION_KEY_TAGS``) wraps the key after the prefix in a hash tag,
``{prefix}{app:…:chunks}`` and ``{prefix}{app:…:chunks}:meta``, so that both share
a slot; keys of either template are always read. Beside an untagged list genbuf
keeps its own fields in ``{K}:genbuf`` (``state_key``), in the list's slot.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from genbuffer.errors import UsageError

__all__ = [
    "MAX_ID",
    "KeyParts",
    "all_buffers_scan_pattern",
    "any_prefix_scan_pattern",
    "buffers_in_page",
    "chunks_key",
    "chunks_key_of",
    "completions_key",
    "events_key",
    "fleet_key",
    "glob_escape",
    "hash_tag",
    "meta_key",
    "parked_events_key",
    "parse_chunks_key",
    "prefix_of",
    "released_key",
    "scenario_scan_pattern",
    "smoke_chunks_key",
    "state_key",
    "sweeper_lock_key",
    "validate_id",
]

ROOT = "app:scenario_planning"
META_SUFFIX = ":meta"
STATE_SUFFIX = ":genbuf"
MAX_ID = 2**63 - 1  # ids are bigint columns
SHOWN_MAX = 60  # characters of a value that is no id an error shows

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
_DIGITS = re.compile(r"[0-9]{1,19}")
_ID = r"([1-9][0-9]{0,18})"
_KEY_RE = re.compile(
    rf"(?P<tag>\{{)?{ROOT}:org:{_ID}(?::scenario:{_ID})?:generation:{_ID}:chunks(?(tag)\}})"
    r"(?P<meta>:meta)?\Z"
)


class KeyParts(NamedTuple):  # a tuple: surveys build one per key of a million
    """The ids a buffer key names, and whether it is the meta hash."""

    organization_id: int
    scenario_id: int | None
    generation_id: int
    is_meta: bool
    tagged: bool = False  # the hash-tagged template: list and meta share a slot


def validate_id(value: object, name: str = "id") -> int:
    """Return ``value`` as a positive bigint id, or raise UsageError."""
    if isinstance(value, bool):
        raise UsageError(f"{name} must be a positive integer, got {_shown(value)}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)  # only ASCII digits: no sign, no "_", no spaces, no other scripts
    else:
        raise UsageError(f"{name} must be a positive integer, got {_shown(value)}")
    if not 1 <= number <= MAX_ID:
        raise UsageError(f"{name} must be between 1 and {MAX_ID}, got {number}")
    return number


def _shown(value: object) -> str:
    """``value`` as an error shows it: its repr, cut at ``SHOWN_MAX`` characters (an id
    read from Redis, a malformed event's field, may be megabytes: the worker's log line
    stays one line of a readable length)."""
    shown = repr(value)
    if len(shown) <= SHOWN_MAX:
        return shown
    return f"{shown[:SHOWN_MAX]}… ({len(shown)} characters)"


def chunks_key(
    organization_id: int,
    generation_id: int,
    scenario_id: int | None = None,
    prefix: str = "",
    *,
    tagged: bool = False,
) -> str:
    """Build the chunks list key of a generation (``tagged``: the hash-tagged template)."""
    org = validate_id(organization_id, "organization id")
    gen = validate_id(generation_id, "generation id")
    if scenario_id is None:
        name = f"{ROOT}:org:{org}:generation:{gen}:chunks"
    else:
        scenario = validate_id(scenario_id, "scenario id")
        name = f"{ROOT}:org:{org}:scenario:{scenario}:generation:{gen}:chunks"
    return f"{prefix}{{{name}}}" if tagged else f"{prefix}{name}"


def hash_tag(key: str) -> str | None:
    """The text a Redis Cluster hashes instead of the whole key, if the key has a tag:
    what stands between the first ``{`` and the first ``}`` after it, when not empty."""
    opening = key.find("{")
    if opening < 0:
        return None
    closing = key.find("}", opening + 1)
    if closing <= opening + 1:
        return None
    return key[opening + 1 : closing]


def released_key(meta: str) -> str:
    """Where release_meta.lua remembers which life's release deleted the app's meta
    hash ``meta`` (beside a split list on a Redis Cluster): ``{meta}:released``, in the
    meta hash's slot (no buffer key: discovery passes it by)."""
    return f"{{{meta}}}:released"


def state_key(chunks: str) -> str:
    """genbuf's own fields (stream id, trimmed, failures) beside an untagged list on a
    Redis Cluster: ``{K}:genbuf`` hashes to the slot of ``K``, so one script can touch
    both, while the app's ``K:meta`` lives in another slot."""
    return f"{{{chunks}}}{STATE_SUFFIX}"


def meta_key(chunks: str) -> str:
    """Return the meta hash key that belongs to a chunks key."""
    return chunks + META_SUFFIX


def events_key(prefix: str = "") -> str:
    """The stream producers announce finished buffers on, for `genbuf worker`."""
    return f"{prefix}{ROOT}:compaction-events"


def completions_key(prefix: str = "") -> str:
    """The stream genbuf announces finished compactions on, for the app (its Laravel
    package's consumer): one entry per committed compaction or strict abort."""
    return f"{prefix}{ROOT}:compaction-completed"


def parked_events_key(prefix: str = "") -> str:
    """The stream where workers park compaction events they cannot read (a malformed
    entry), acknowledged and kept for a person to look at."""
    return f"{prefix}{ROOT}:compaction-events:parked"


def fleet_key(prefix: str = "") -> str:
    """The hash of the workers' heartbeats: consumer name -> when it last beat and the
    options it runs with (the sweep holder reads the fleet's idle rule from it)."""
    return f"{prefix}{ROOT}:compaction-workers"


def sweeper_lock_key(prefix: str = "") -> str:
    """The key whose holder sweeps for buffers nobody announced (one worker at a time)."""
    return f"{prefix}{ROOT}:compaction-sweeper"


def smoke_chunks_key(token: str, prefix: str = "", *, tagged: bool = False) -> str:
    """A throw-away chunks key for `genbuf test-redis-buffer`, outside every generation."""
    if not re.fullmatch(r"[0-9a-f]{8,64}", token):
        raise UsageError(f"smoke-test token must be hex, got {token!r}")
    name = f"{ROOT}:smoke-test:{token}:chunks"
    return f"{prefix}{{{name}}}" if tagged else f"{prefix}{name}"


def glob_escape(text: str) -> str:
    """Escape the glob characters SCAN MATCH understands."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def scenario_scan_pattern(organization_id: int, generation_id: int, prefix: str = "") -> str:
    """SCAN pattern for a generation's keys under any scenario (list and meta), of both
    templates."""
    org = validate_id(organization_id, "organization id")
    gen = validate_id(generation_id, "generation id")
    return f"{glob_escape(prefix)}*{ROOT}:org:{org}:scenario:*:generation:{gen}:chunks*"


def all_buffers_scan_pattern(prefix: str = "") -> str:
    """SCAN pattern matching every buffer key under ``prefix``: lists and meta hashes, of
    both templates (the ``*`` after the prefix is the tag's ``{`` or nothing; what else
    it lets through is dropped by ``parse_chunks_key``)."""
    return f"{glob_escape(prefix)}*{ROOT}:org:*:generation:*:chunks*"


def any_prefix_scan_pattern() -> str:
    """SCAN pattern matching buffer keys under any prefix (to find where buffers live)."""
    return f"*{ROOT}:org:*:generation:*:chunks*"


def prefix_of(key: str) -> str | None:
    """The prefix a buffer key carries (what stands before the key scheme and its tag),
    or None."""
    at = key.find(f"{ROOT}:org:")
    if at > 0 and key[at - 1] == "{":
        at -= 1
    if at < 0 or parse_chunks_key(key, key[:at]) is None:
        return None
    return key[:at]


def chunks_key_of(key: str) -> str:
    """The chunks list key of a buffer key (a meta hash key loses its suffix)."""
    return key.removesuffix(META_SUFFIX)


def parse_chunks_key(key: str, prefix: str = "") -> KeyParts | None:
    """Parse a key (as SCAN returns it, prefix included); None if it is not a buffer key."""
    if not key.startswith(prefix):
        return None
    match = _KEY_RE.fullmatch(key[len(prefix) :])
    if match is None:
        return None
    org, scenario, gen = match.group(2), match.group(3), match.group(4)  # 1: the tag
    return KeyParts(
        organization_id=int(org),
        scenario_id=int(scenario) if scenario is not None else None,
        generation_id=int(gen),
        is_meta=match.group("meta") is not None,
        tagged=match.group("tag") is not None,
    )


def buffers_in_page(names: list[str], prefix: str = "") -> list[tuple[KeyParts, str]]:
    """The buffers a SCAN page names, each once, as (parts, chunks key): every list, and
    every meta hash whose list is not in the same page (it may be gone, or come in
    another page: the caller tells by asking whether the list exists)."""
    listed = set(names)
    found: list[tuple[KeyParts, str]] = []
    for name in names:
        parts = parse_chunks_key(name, prefix)
        if parts is None:
            continue
        chunks = chunks_key_of(name)
        if parts.is_meta and chunks in listed:
            continue  # its list is in this page: described once, from the list
        found.append((parts, chunks))
    return found
