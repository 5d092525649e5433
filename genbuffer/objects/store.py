"""The object store that large artifacts are offloaded to, by URL, through obstore.

obstore (Rust's ``object_store`` behind a small Python API, one wheel without
dependencies) was chosen over boto3 for size and speed: it speaks S3, the local
file system and memory behind the same calls, uploads an iterator as a multipart
upload with bounded concurrency and streams downloads, and it imports in
milliseconds where boto3 and botocore cost a hundred times that at start-up.

URLs, as ``GENERATION_OFFLOAD_URL`` gives them and as `compacted` then holds them:

- ``s3://bucket/prefix``: AWS S3 or an S3-compatible store (``AWS_ENDPOINT_URL``);
- ``file:///path``: a directory (created on first use);
- ``memory://``: one in-process store per URL, for tests and ``make demo``.

Settings are passed explicitly (genbuffer reads the environment through Settings
only), so an app's ``.env`` with Laravel's ``AWS_*`` names works as it is.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from genbuffer.errors import DependencyUnavailable, OperationFailed, UsageError

if TYPE_CHECKING:
    from obstore.store import ClientConfig, S3Config
    from obstore.store import ObjectStore as Backend

    from genbuffer.settings import Settings

__all__ = [
    "ObjectMissing",
    "ObjectStoreUnavailable",
    "Store",
    "StoredObject",
    "locate",
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
    """A store rooted at one URL: paths below it, and the URL of each object."""

    def __init__(self, url: str, backend: Backend) -> None:
        self.url = normalise_url(url)
        self.backend = backend

    def url_of(self, path: str) -> str:
        """The URL `compacted` holds for the object at ``path``."""
        return f"{self.url}/{path}"

    def path_of(self, url: str) -> str | None:
        """The path below this store of ``url``; None when ``url`` is elsewhere."""
        head = self.url + "/"
        return url[len(head) :] if url.startswith(head) else None

    def put(self, path: str, blocks: Iterable[bytes], content_type: str) -> None:
        """Upload ``blocks`` as one object, a multipart upload past one part, with no more
        than UPLOAD_CONCURRENCY parts in flight. Atomic: an error while ``blocks`` are
        read (an outage, a changed buffer) aborts the upload and leaves no object.

        A writer fed from Python, not put() given the iterator: the blocks may come from
        this store's own downloads, which cannot run inside put()'s event loop."""
        import obstore  # noqa: PLC0415

        # a directory keeps no attributes (obstore refuses them there): the row has the type
        typed = None if self.url.startswith("file:") else {"Content-Type": content_type}
        with store_errors(self.url, writing=True):
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

    def read(self, path: str) -> Iterator[bytes]:
        """The object's bytes, in blocks, as they are downloaded."""
        import obstore  # noqa: PLC0415

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

        for start in range(0, len(paths), DELETE_BATCH):
            with store_errors(self.url):
                obstore.delete(self.backend, paths[start : start + DELETE_BATCH])


def normalise_url(url: str) -> str:
    """``url`` without trailing slashes (``memory://`` stays as it is)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.lower()}{sep}{rest.rstrip('/')}" if sep else url.rstrip("/")


def locate(
    url: str, settings: Settings | None, configured: Store | None = None
) -> tuple[Store, str]:
    """The store holding the object at ``url`` and its path there: the configured store
    when the URL is below it, else the URL's own bucket, directory or memory store
    (a row written before GENERATION_OFFLOAD_URL changed is still read)."""
    if configured is not None and (path := configured.path_of(url)) is not None:
        return configured, path
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    path = parts.path.lstrip("/")
    if not path:
        raise ObjectMissing(f"{url!r} names no object")
    root = {"s3": f"s3://{parts.netloc}", "file": "file:///", "memory": "memory://"}.get(scheme)
    if root is None:
        raise ObjectMissing(f"{url!r} is not an object store URL genbuf wrote")
    return open_store(root, settings), path


def open_store(url: str, settings: Settings | None) -> Store:
    """The store at ``url`` (a GENERATION_OFFLOAD_URL, or where a row's object lives)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return Store(url, _memory_backend(url))
    if scheme == "file":
        return Store(url, _file_backend(url))
    if scheme == "s3":
        backend, bucket = _s3_backend(url, settings)
        # the URL rows keep names its bucket, also when AWS_BUCKET gave it (s3:///prefix)
        return Store(f"s3://{bucket}{urlsplit(url).path}", backend)
    raise UsageError(
        f"GENERATION_OFFLOAD_URL {url!r} is not an object store URL",
        hint="use s3://bucket/prefix, file:///path or memory://",
    )


def _memory_backend(url: str) -> Backend:
    from obstore.store import MemoryStore  # noqa: PLC0415

    # one per URL and process: what compaction writes, show-generation then reads
    with _memory_lock:
        return _memory_stores.setdefault(normalise_url(url), MemoryStore())


def _file_backend(url: str) -> Backend:
    from obstore.store import LocalStore  # noqa: PLC0415

    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise UsageError(
            f"GENERATION_OFFLOAD_URL {url!r}: a file URL needs an absolute path",
            hint="file:///var/lib/genbuf/objects (three slashes)",
        )
    try:
        Path(parts.path).mkdir(parents=True, exist_ok=True)
        return LocalStore(parts.path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"GENERATION_OFFLOAD_URL {url!r} is not usable: {exc}") from None


def _s3_backend(url: str, settings: Settings | None) -> tuple[Backend, str]:
    from obstore.store import S3Store  # noqa: PLC0415

    parts = urlsplit(url)
    bucket = parts.netloc or (settings.aws_bucket if settings is not None else None)
    if not bucket:
        raise UsageError(
            f"GENERATION_OFFLOAD_URL {url!r} names no bucket",
            hint="s3://bucket/prefix, or set AWS_BUCKET",
        )
    store = S3Store(
        bucket,
        prefix=parts.path.strip("/") or None,
        config=s3_config(settings),
        client_options=_client_options(settings),
    )
    return store, bucket


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
