"""The object store that large artifacts are offloaded to, by URL, through obstore.

obstore (Rust's ``object_store`` behind a small Python API, one wheel without
dependencies) was chosen over boto3 for size and speed: it speaks S3, the local
file system and memory behind the same calls, uploads an iterator as a multipart
upload with bounded concurrency and streams downloads, and it imports in
milliseconds where boto3 and botocore cost a hundred times that at start-up.

URLs, as ``GENERATION_OFFLOAD_URL`` gives them and as `compacted` then holds them
(in their canonical form, genbuffer.objects.location):

- ``s3://bucket/prefix``: AWS S3 or an S3-compatible store (``AWS_ENDPOINT_URL``);
- ``file:///path``: a directory (created on first use, 0700); objects are written
  0600 in 0700 directories (0640/0750 with GENERATION_OFFLOAD_FILE_GROUP), and a
  path that leaves the directory through a symlink is refused;
- ``memory://``: one in-process store per URL, for tests and ``make demo``.

A Store only ever opens a URL from the settings; which object a row may name is
decided before (genbuffer.objects.boundary). Settings are passed explicitly
(genbuffer reads the environment through Settings only), so an app's ``.env`` with
Laravel's ``AWS_*`` names works as it is.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from genbuffer.errors import DependencyUnavailable, ObjectRefused, OperationFailed, UsageError
from genbuffer.objects.location import Location, store_location

if TYPE_CHECKING:
    from obstore.store import ClientConfig, S3Config
    from obstore.store import ObjectStore as Backend

    from genbuffer.settings import Settings

__all__ = [
    "FileModes",
    "ObjectMissing",
    "ObjectStoreUnavailable",
    "Store",
    "StoredObject",
    "open_store",
]

# An upload holds the part being filled and the parts in flight: S3's least part size,
# one in flight, keeps a 1 GB compaction under 100 MB of peak RSS (make bench, 10).
UPLOAD_PART_BYTES = 5 * 1024 * 1024
UPLOAD_CONCURRENCY = 1
DOWNLOAD_BLOCK_BYTES = 1024 * 1024  # a download is handed on this much at a time
DELETE_BATCH = 1000  # S3's DeleteObjects takes at most this many keys

_memory_stores: dict[str, Backend] = {}
_memory_lock = threading.Lock()


class ObjectStoreUnavailable(DependencyUnavailable):
    """The object store refused, dropped or timed out a request."""


class ObjectMissing(OperationFailed):
    """An object a row points at is not in the store."""


@dataclass(frozen=True)
class FileModes:
    """The modes of what a file:// store writes: owner-only unless a group is given
    (the app's PHP reading objects as that group)."""

    file: int = 0o600
    directory: int = 0o700
    group: int | None = None  # gid given to every directory and object written

    @classmethod
    def for_group(cls, group: int | None) -> FileModes:
        """Owner-only, or readable by ``group`` (0640 / 0750)."""
        return cls() if group is None else cls(0o640, 0o750, group)


@dataclass(frozen=True)
class StoredObject:
    """One object as a listing shows it; ``path`` is relative to the store's URL."""

    path: str
    size: int
    last_modified: datetime


@contextmanager
def store_errors(url: str, *, writing: bool = False) -> Iterator[None]:
    """Turn obstore's errors into genbuffer's: a missing object is exit 1 (a missing
    bucket, when writing, a usage error: exit 2), anything else (refused, denied, timed
    out) an unavailable store, exit 3."""
    from obstore.exceptions import BaseError, NotFoundError  # noqa: PLC0415

    try:
        yield
    except (NotFoundError, FileNotFoundError) as exc:
        if writing:
            raise UsageError(
                f"object store {url}: nowhere to write: {_first_line(exc)}",
                hint="create the bucket, or fix GENERATION_OFFLOAD_URL (genbuf config show)",
            ) from None
        raise ObjectMissing(
            f"object not found in {url}: {_first_line(exc)}",
            hint="the row points at an object that was deleted outside genbuf",
        ) from None
    except (BaseError, OSError) as exc:
        raise ObjectStoreUnavailable(
            f"object store {url} failed: {_first_line(exc)}",
            hint="check GENERATION_OFFLOAD_URL, the AWS_* credentials and the endpoint "
            "(genbuf config show)",
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


class Store:
    """A store rooted at one configured URL: paths below it, and the URL of each object."""

    def __init__(
        self, location: Location, backend: Backend, modes: FileModes | None = None
    ) -> None:
        self.location = location
        self.url = location.url
        self.backend = backend
        self.modes = modes or FileModes()

    @property
    def is_directory(self) -> bool:
        """Whether this is a file:// store (a directory on this host)."""
        return self.location.scheme == "file"

    def url_of(self, path: str) -> str:
        """The URL `compacted` holds for the object at ``path``."""
        return self.location.child(path).url

    def path_of(self, url: str) -> str | None:
        """The path below this store of ``url``; None when ``url`` is elsewhere."""
        from genbuffer.objects.location import object_location  # noqa: PLC0415

        location = object_location(url)
        return None if location is None else location.key_in(self.location)

    def contains(self, path: str) -> bool:
        """Whether ``path`` stays inside the store: a file:// store's path must not leave
        its directory through a symlink (S3 and memory paths always stay)."""
        if not self.is_directory:
            return True
        root = Path(self.location.directory).resolve()
        target = (root / path).resolve()
        return target != root and target.is_relative_to(root)

    def ensure_inside(self, path: str) -> None:
        """ObjectRefused unless ``path`` stays inside the store (nothing is read)."""
        if not self.contains(path):
            raise ObjectRefused(
                f"{self.url}: the object at {path!r} leads out of the store's directory "
                "through a symlink; refused, nothing was read",
                hint="only genbuf should write to the store's directory: remove the symlink",
            )

    def put(self, path: str, blocks: Iterable[bytes], content_type: str) -> None:
        """Upload ``blocks`` as one object, a multipart upload past one part, with no more
        than UPLOAD_CONCURRENCY parts in flight. Atomic: an error while ``blocks`` are
        read (an outage, a changed buffer) aborts the upload and leaves no object.

        A writer fed from Python, not put() given the iterator: the blocks may come from
        this store's own downloads, which cannot run inside put()'s event loop."""
        import obstore  # noqa: PLC0415

        # a directory keeps no attributes (obstore refuses them there): the row has the type
        typed = None if self.location.scheme == "file" else {"Content-Type": content_type}
        with store_errors(self.url, writing=True):
            if self.is_directory:
                self._prepare_directories(path)
            writer = obstore.open_writer(
                self.backend,
                path,
                attributes=typed,
                buffer_size=UPLOAD_PART_BYTES,
                max_concurrency=UPLOAD_CONCURRENCY,
            )
            with writer:
                for block in blocks:
                    writer.write(block)
            if self.is_directory:
                self._set_mode(Path(self.location.directory, path), self.modes.file)

    def _prepare_directories(self, path: str) -> None:
        """Create ``path``'s directories with the store's mode before anything is written
        in them (obstore's partial upload is a file beside the object: others must not
        read it meanwhile); a path leading out through a symlink is refused first."""
        self.ensure_inside(path)
        directory = Path(self.location.directory)
        for part in path.split("/")[:-1]:
            directory /= part
            try:
                directory.mkdir(self.modes.directory)
            except FileExistsError:
                if directory.lstat().st_uid != os.geteuid():
                    continue  # not ours to change (doctor reports a loose store)
            self._set_mode(directory, self.modes.directory)

    def _set_mode(self, path: Path, mode: int) -> None:
        """``mode`` (the umask does not apply), and the store's group when it has one."""
        if self.modes.group is not None:
            try:
                os.chown(path, -1, self.modes.group)
            except PermissionError:
                raise UsageError(
                    f"GENERATION_OFFLOAD_FILE_GROUP: cannot give {path} to group "
                    f"{self.modes.group}",
                    hint="the user genbuf runs as must be a member of that group",
                ) from None
        path.chmod(mode)

    def read(self, path: str) -> Iterator[bytes]:
        """The object's bytes, in blocks, as they are downloaded."""
        import obstore  # noqa: PLC0415

        self.ensure_inside(path)
        with store_errors(self.url):
            result = obstore.get(self.backend, path)
            for block in result.stream(min_chunk_size=DOWNLOAD_BLOCK_BYTES):
                yield bytes(block)

    def objects(self, prefix: str | None = None) -> Iterator[StoredObject]:
        """Every object below the store's URL (or below ``prefix`` in it), page by page."""
        import obstore  # noqa: PLC0415

        with store_errors(self.url):
            for page in obstore.list(self.backend, prefix=prefix):
                for meta in page:
                    yield StoredObject(meta["path"], int(meta["size"]), meta["last_modified"])

    def delete(self, paths: list[str]) -> None:
        """Delete the objects at ``paths`` (absent ones are no error)."""
        import obstore  # noqa: PLC0415

        for path in paths:
            self.ensure_inside(path)
        for start in range(0, len(paths), DELETE_BATCH):
            with store_errors(self.url):
                obstore.delete(self.backend, paths[start : start + DELETE_BATCH])

    def permissions(self) -> list[str]:
        """What is loose about a file:// store's directory and its parent: world-readable
        or -writable (empty: nothing, or not a directory)."""
        if not self.is_directory:
            return []
        found = []
        directory = Path(self.location.directory)
        mode = directory.stat().st_mode
        kinds = [
            *(["readable"] if mode & (stat.S_IROTH | stat.S_IXOTH) else []),
            *(["writable"] if mode & stat.S_IWOTH else []),
        ]
        if kinds:
            found.append(f"{directory} is world-{' and -'.join(kinds)} ({stat.filemode(mode)})")
        parent = directory.parent
        parent_mode = parent.stat().st_mode
        if parent_mode & stat.S_IWOTH:
            found.append(f"its parent {parent} is world-writable ({stat.filemode(parent_mode)})")
        return found


class StoreDirectoryMissing(UsageError):
    """A file:// store's directory does not exist, and nothing may create it here."""


def open_store(url: str, settings: Settings | None, *, create: bool = True) -> Store:
    """The store at ``url``: GENERATION_OFFLOAD_URL, or one of GENERATION_OFFLOAD_READ_URLS
    (``create`` False: an earlier store's directory is not created). Never a URL read
    from a row: genbuffer.objects.boundary decides which configured store holds one."""
    bucket = settings.aws_bucket if settings is not None else None
    try:
        location = store_location(url, bucket=bucket)
    except ValueError as exc:
        raise UsageError(
            f"object store URL {exc}", hint="use s3://bucket/prefix, file:///path or memory://"
        ) from None
    if location.scheme == "memory":
        return Store(location, _memory_backend(location))
    if location.scheme == "file":
        gid = settings.offload_file_gid() if settings is not None else None
        modes = FileModes.for_group(gid)
        return Store(location, _file_backend(location, modes, create=create), modes)
    if not location.authority:
        raise UsageError(
            f"GENERATION_OFFLOAD_URL {url!r} names no bucket",
            hint="s3://bucket/prefix, or set AWS_BUCKET",
        )
    # the URL rows keep names its bucket, also when AWS_BUCKET gave it (s3:///prefix)
    return Store(location, _s3_backend(location, settings))


def _memory_backend(location: Location) -> Backend:
    from obstore.store import MemoryStore  # noqa: PLC0415

    # one per URL and process: what compaction writes, show-generation then reads
    with _memory_lock:
        return _memory_stores.setdefault(location.url, MemoryStore())


def _file_backend(location: Location, modes: FileModes, *, create: bool) -> Backend:
    from obstore.exceptions import BaseError  # noqa: PLC0415
    from obstore.store import LocalStore  # noqa: PLC0415

    directory = Path(location.directory)
    if not create and not directory.exists():
        raise StoreDirectoryMissing(
            f"object store {location.url}: the directory {directory} does not exist",
            hint=f"the first compaction that offloads creates it (mode 0700); "
            f"or create it: mkdir -m 700 {directory}",
        )
    try:
        if create and not directory.exists():
            directory.parent.mkdir(parents=True, exist_ok=True)
            directory.mkdir(mode=modes.directory, exist_ok=True)
            if modes.group is not None:
                os.chown(directory, -1, modes.group)
            directory.chmod(modes.directory)  # the umask does not apply
        return LocalStore(directory)
    except (OSError, ValueError, BaseError) as exc:
        raise UsageError(f"object store {location.url} is not usable: {_first_line(exc)}") from None


def _s3_backend(location: Location, settings: Settings | None) -> Backend:
    from obstore.store import S3Store  # noqa: PLC0415

    return S3Store(
        location.authority,
        prefix="/".join(location.segments) or None,
        config=s3_config(settings),
        client_options=_client_options(settings),
    )


def s3_config(settings: Settings | None) -> S3Config:
    """obstore's S3 configuration from the AWS_* settings (Laravel's names included)."""
    config: S3Config = {}
    if settings is None:
        return config
    if settings.aws_access_key_id:
        config["access_key_id"] = settings.aws_access_key_id
    if settings.aws_secret_access_key is not None:
        config["secret_access_key"] = settings.aws_secret_access_key.get_secret_value()
    if settings.aws_session_token is not None:
        config["session_token"] = settings.aws_session_token.get_secret_value()
    if region := settings.aws_default_region or settings.aws_region:
        config["region"] = region
    if endpoint := settings.s3_endpoint():
        config["endpoint"] = endpoint
    if settings.aws_use_path_style_endpoint is not None:
        config["virtual_hosted_style_request"] = not settings.aws_use_path_style_endpoint
    return config


def _client_options(settings: Settings | None) -> ClientConfig:
    endpoint = (settings.s3_endpoint() if settings is not None else None) or ""
    # an S3-compatible store on a private network often speaks plain HTTP
    return {"allow_http": True} if endpoint.startswith("http://") else {}
