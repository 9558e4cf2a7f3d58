"""The spool: sanitised UIDs and durable writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.errors import StorageError
from node.spool import Spool, safe_uid, write_atomic


@pytest.mark.parametrize("uid", ["1.2.840.113619.2.55.3", "2.25.123456789012345678901234567890"])
def test_conformant_uid_kept(uid: str) -> None:
    assert safe_uid(uid) == uid


@pytest.mark.parametrize(
    "uid", ["../../etc/passwd", "1.2/3", "..", "", "1.2.3\x00", "9" * 65, "1.2 .3", ".1.2"]
)
def test_hostile_uid_sanitised(uid: str) -> None:
    safe = safe_uid(uid)
    assert "/" not in safe and ".." not in safe and "\x00" not in safe
    assert safe.startswith("x") and len(safe) == 33


def test_distinct_hostile_uids_do_not_collide() -> None:
    assert safe_uid("../a") != safe_uid("../b")


def test_spool_paths_stay_inside_root(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 0)
    path = spool.instance_path("../../x", "/abs", "..")
    assert path.resolve().is_relative_to(tmp_path.resolve())


def test_write_atomic_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.dcm"
    write_atomic(target, b"abc")
    write_atomic(target, b"defg")
    assert target.read_bytes() == b"defg"
    assert [p.name for p in target.parent.iterdir()] == ["b.dcm"]


def test_write_failure_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(StorageError):
        write_atomic(blocker / "child.dcm", b"x")


def test_free_space_threshold(tmp_path: Path) -> None:
    assert Spool(tmp_path, 0).has_room(1)
    assert not Spool(tmp_path, 1 << 62).has_room(1)


def test_changed_resend_is_kept_beside_the_first_copy(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 0)
    first, sha1 = spool.store("1.2", "1.2.3", "1.2.3.4", b"version one")
    again, sha_again = spool.store("1.2", "1.2.3", "1.2.3.4", b"version one")
    changed, sha2 = spool.store("1.2", "1.2.3", "1.2.3.4", b"version two")
    assert again == first and sha_again == sha1
    assert changed != first and changed.name == f"1.2.3.4.{sha2[:12]}.dcm"
    assert first.read_bytes() == b"version one" and changed.read_bytes() == b"version two"
