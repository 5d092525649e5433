"""The one canonical form of an object's location: which store, and which object in it.

A URL names a location in several spellings: ``file:///srv/objs``,
``file://localhost/srv/objs``, ``file:///srv//objs``, ``file:///srv/./objs`` and
``file:////srv/objs`` are one directory, and ``s3://bucket//prefix`` is the prefix
``prefix`` of ``bucket`` (obstore addresses no empty path segment). A ``Location``
is that place once: the scheme, the authority (the bucket; ``""`` for a directory;
the name of an in-process store) and the path's segments without empty or ``.`` ones.
Every comparison of object locations (the trust boundary, purge-objects, read-back)
compares Locations, never URL strings.

Two parsers, one for each kind of source:

- ``store_location``: a store URL from the settings (trusted, checked when they
  load): a malformed one (a bucket with a space, ``..``, a query) is a ValueError,
  which Settings turns into a usage error (exit 2).
- ``object_location``: a URL read from a row (not trusted): None unless it is a URL
  genbuf could have written; ``..`` is never resolved, ``%`` never decoded (so
  ``%2e%2e`` is three literal characters that no configured store holds).

Pure: no I/O, no import of obstore (Settings uses it while loading).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SCHEMES", "Location", "object_location", "store_location"]

SCHEMES = ("s3", "file", "memory")
# S3's rules, loosened to what older buckets and S3-compatible stores accept; anything
# else (a space, a slash, a colon) would reach obstore's request signer, which panics
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_MEMORY_NAME = re.compile(r"^[A-Za-z0-9._-]*$")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f?#]")  # control characters, a query, a fragment


@dataclass(frozen=True)
class Location:
    """A store, or an object in one, in its canonical form."""

    scheme: str  # "s3", "file" or "memory"
    authority: str  # the bucket; "" for a directory; the in-process store's name
    segments: tuple[str, ...] = ()  # the path, without empty, "." or ".." segments

    @property
    def url(self) -> str:
        """The canonical URL: what rows written from now on hold, what messages show."""
        path = "".join(f"/{segment}" for segment in self.segments)
        if self.scheme == "file":
            return f"file://{path or '/'}"
        return f"{self.scheme}://{self.authority}{path}"

    @property
    def directory(self) -> str:
        """A file:// location's absolute path on this host."""
        return "/" + "/".join(self.segments)

    def child(self, key: str) -> Location:
        """The location of ``key`` (a name genbuf writes, ``org-1/gen-2/…``) below this one."""
        return Location(self.scheme, self.authority, (*self.segments, *key.split("/")))

    def key_in(self, root: Location) -> str | None:
        """This location's path below ``root``; None unless it is strictly inside it."""
        depth = len(root.segments)
        if (
            (self.scheme, self.authority) != (root.scheme, root.authority)
            or len(self.segments) <= depth
            or self.segments[:depth] != root.segments
        ):
            return None
        return "/".join(self.segments[depth:])


def store_location(url: str, *, bucket: str | None = None) -> Location:
    """The canonical form of a configured store's URL; ``bucket`` fills in an S3 URL that
    names none (``s3:///prefix`` with AWS_BUCKET). ValueError says what is wrong."""
    scheme, authority, path = _split(url)
    if scheme is None:
        raise ValueError(
            f"{url!r} is not an object store URL: use s3://bucket/prefix, file:///path or memory://"
        )
    if _UNSAFE.search(url):
        raise ValueError(f"{url!r} holds a control character, '?' or '#'")
    segments = _segments(path)
    if segments is None:
        raise ValueError(f"{url!r}: '..' is not allowed in a store URL (name the directory itself)")
    if scheme == "file":
        if authority.lower() not in ("", "localhost") or not path.startswith("/"):
            raise ValueError(
                f"{url!r}: a file URL needs an absolute path (file:///var/lib/genbuf/objects)"
            )
        return Location("file", "", segments)
    if scheme == "s3":
        authority = authority or bucket or ""
        if authority and not _BUCKET.match(authority):
            raise ValueError(
                f"{url!r}: {authority!r} is not a bucket name (letters, digits, '.', '-', '_')"
            )
        return Location("s3", authority, segments)
    if not _MEMORY_NAME.match(authority):
        raise ValueError(f"{url!r}: an in-process store's name is letters, digits, '.', '-', '_'")
    return Location("memory", authority, segments)


def object_location(url: str) -> Location | None:
    """The canonical form of an object URL read from a row; None when it is not a URL
    genbuf could have written (another scheme, ``..``, a control character, a query,
    a port or user, a file URL on another host)."""
    try:
        location = store_location(url)
    except ValueError:
        return None
    if not location.segments or (location.scheme == "s3" and not location.authority):
        return None
    return location


def _split(url: str) -> tuple[str | None, str, str]:
    """(scheme, authority, path) of ``scheme://authority/path``; scheme None when it is
    not one of SCHEMES."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        return None, "", ""
    authority, slash, path = rest.partition("/")
    return scheme.lower(), authority, slash + path


def _segments(path: str) -> tuple[str, ...] | None:
    """The path's segments without empty and "." ones; None when one is ".."."""
    segments = tuple(part for part in path.split("/") if part not in ("", "."))
    return None if ".." in segments else segments
