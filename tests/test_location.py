"""The canonical form of object locations, and the trust boundary that uses it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genbuffer.errors import ObjectRefused
from genbuffer.objects.artifact import OffloadRecord, object_path
from genbuffer.objects.boundary import Boundary
from genbuffer.objects.location import Location, object_location, store_location

SHA = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "url",
    [
        "file:///srv/objs",
        "file://localhost/srv/objs",
        "file://LOCALHOST/srv/objs/",
        "file:///srv//objs",
        "file:///srv/./objs",
        "file:////srv/objs",
        "FILE:///srv/objs//",
    ],
)
def test_spellings_of_a_directory_are_one_location(url: str) -> None:
    """Each spelling the unattended-paths issue lists is file:///srv/objs."""
    location = store_location(url)
    assert location == Location("file", "", ("srv", "objs"))
    assert location.url == "file:///srv/objs" and location.directory == "/srv/objs"


def test_an_s3_prefix_has_no_empty_segment_and_a_bucket_may_come_from_aws_bucket() -> None:
    """s3://bucket//prefix is the prefix `prefix` (obstore addresses no empty segment);
    s3:///prefix takes AWS_BUCKET's bucket."""
    assert store_location("s3://bucket//prefix/").url == "s3://bucket/prefix"
    assert store_location("s3:///prefix", bucket="app").url == "s3://app/prefix"
    assert store_location("memory://").url == "memory://"
    assert store_location("file:///").url == "file:///"


@pytest.mark.parametrize(
    "url",
    [
        "s3://bad bucket/x",
        "s3://user@bucket/x",
        "s3://bucket:9000/x",
        "file:///srv/../etc",
        "file://otherhost/srv",
        "file:relative/path",
        "s3://bucket/x?versionId=1",
        "s3://bucket/x#frag",
        "s3://bucket/x\nInjected: header",
        "ftp://host/x",
        "/srv/objs",
    ],
)
def test_a_malformed_store_url_is_a_value_error(url: str) -> None:
    """What obstore would panic on, or would resolve somewhere unexpected, is refused."""
    with pytest.raises(ValueError):
        store_location(url)


@pytest.mark.parametrize(
    "url",
    [
        "file:///srv/objs/org-1/../../etc/passwd",
        "s3://bucket/a/../b",
        "s3:///no-bucket/x",
        "file:///",
        "https://example.com/x",
        "memory://name with space/x",
        "",
        "c2VjcmV0",  # base64, not a URL
    ],
)
def test_an_object_url_genbuf_never_writes_has_no_location(url: str) -> None:
    """`..` is never resolved; a URL without an object or bucket, another scheme: None."""
    assert object_location(url) is None


def test_percent_encoding_is_never_decoded() -> None:
    """%2e%2e is three literal characters, so it never climbs out of a directory."""
    location = object_location("file:///srv/objs/org-1/%2e%2e/%2e%2e/etc/passwd")
    assert location is not None and "%2e%2e" in location.segments
    assert location.key_in(store_location("file:///srv/objs")) == "org-1/%2e%2e/%2e%2e/etc/passwd"


_SEGMENT = st.text(alphabet="abcXYZ019_-.%~", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..")
)


@given(
    root=st.lists(_SEGMENT, min_size=1, max_size=4),
    key=st.lists(_SEGMENT, min_size=1, max_size=4),
    noise=st.lists(st.sampled_from(["/", "//", "/./", "/.//"]), min_size=9, max_size=9),
    host=st.sampled_from(["", "localhost"]),
)
def test_any_spelling_compares_equal_and_keys_round_trip(
    root: list[str], key: list[str], noise: list[str], host: str
) -> None:
    """Whatever slashes and `.` a URL is spelled with, it is one Location; the key of an
    object below a root is what was appended, and nothing outside is below it."""
    spelled = "".join(noise[i % len(noise)] + part for i, part in enumerate(root))
    store = store_location(f"file://{host}{spelled}")
    assert store == store_location("file:///" + "/".join(root))
    obj = object_location(store.url + "".join(f"//{part}" for part in key))
    assert obj is not None and obj.key_in(store) == "/".join(key)
    assert store.child("/".join(key)) == obj
    assert store.key_in(store) is None and store.key_in(obj) is None
    sibling = Location("file", "", (*root[:-1], root[-1] + "x", *key))
    assert sibling.key_in(store) is None  # /srv/objsx is not inside /srv/objs


def _record(url: str, sha256: str = SHA, compression: str = "none") -> OffloadRecord:
    return OffloadRecord(url, 10, sha256, compression, "text/plain", 10)


def test_the_boundary_admits_only_the_rows_own_name_in_a_configured_store() -> None:
    """The row's organization, generation, sha256 and compression make the one name it
    may hold, in the current store or a listed earlier one; anything else is refused."""
    boundary = Boundary(
        current=store_location("s3://bucket/art"), earlier=(store_location("file:///old"),)
    )
    own = object_path(7, 8, SHA, "zstd")
    admitted = boundary.admit(_record(f"s3://bucket//art/{own}", compression="zstd"), 7, 8)
    assert (admitted.root.url, admitted.key) == ("s3://bucket/art", own)
    earlier = boundary.admit(
        _record(f"file://localhost/old/{object_path(7, 8, SHA, 'none')}"), 7, 8
    )
    assert earlier.root.url == "file:///old"
    refused = [
        _record(f"s3://bucket/art/{own}"),  # the record says uncompressed: no .zst
        _record(f"s3://bucket/art/{object_path(7, 9, SHA, 'none')}"),  # another generation
        _record(f"s3://bucket/art/{object_path(6, 8, SHA, 'none')}"),  # another organization
        _record(f"s3://other/art/{object_path(7, 8, SHA, 'none')}"),  # another bucket
        _record(f"s3://bucket/{object_path(7, 8, SHA, 'none')}"),  # outside the prefix
        _record(f"s3://bucket/art/{object_path(7, 8, 'a/b', 'none')}", sha256="a/b"),
        _record("file:///etc/passwd"),
    ]
    for record in refused:
        with pytest.raises(ObjectRefused) as caught:
            boundary.admit(record, 7, 8)
        assert caught.value.exit_code == 4 and "nothing was read" in caught.value.message
    with pytest.raises(ObjectRefused, match="none"):
        Boundary().admit(_record(f"s3://bucket/art/{own}"), 7, 8)
