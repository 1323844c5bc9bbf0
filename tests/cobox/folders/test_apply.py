import os

import pytest

from cobox.errors import FileChangedError, UnsafePathError
from cobox.folders.apply import clean_temp, move_file, remove_file, write_file
from cobox.folders.plan import LocalFile


def local(p) -> LocalFile:
    st = p.stat()
    return LocalFile(st.st_size, st.st_mtime_ns)


def leftovers(root) -> list[str]:
    return [n for _, _, files in os.walk(root) for n in files if n.startswith(".cobox-tmp-")]


def test_write_new_file_with_mode_and_mtime(tmp_path) -> None:
    out = write_file(tmp_path, "d/e/f.txt", iter([b"hel", b"lo"]), size=5, mode=0o600, mtime=1_234_000_000_000,
                     expect=None)
    p = tmp_path / "d" / "e" / "f.txt"
    assert p.read_bytes() == b"hello" and p.stat().st_mtime_ns == 1_234_000_000_000
    assert oct(p.stat().st_mode & 0o777) == oct(0o600) and out == LocalFile(5, 1_234_000_000_000, 0o600)
    assert leftovers(tmp_path) == []


def test_write_empty_file_and_unicode_name(tmp_path) -> None:
    write_file(tmp_path, "ñandú/空.txt", iter([]), size=0, mode=0o644, mtime=10**18, expect=None)
    assert (tmp_path / "ñandú" / "空.txt").read_bytes() == b""


def test_replace_an_indexed_file(tmp_path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"old")
    write_file(tmp_path, "f", iter([b"new!"]), size=4, mode=0o644, mtime=10**18, expect=local(p))
    assert p.read_bytes() == b"new!"


def test_crash_mid_write_leaves_the_old_file(tmp_path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"old content")

    def failing():
        yield b"partial"
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_file(tmp_path, "f", failing(), size=100, mode=0o644, mtime=0, expect=local(p))
    assert p.read_bytes() == b"old content" and leftovers(tmp_path) == []
    with pytest.raises(ValueError):  # short data is refused too
        write_file(tmp_path, "f", iter([b"x"]), size=100, mode=0o644, mtime=0, expect=local(p))
    assert p.read_bytes() == b"old content" and leftovers(tmp_path) == []


def test_refuses_a_file_changed_since_indexing(tmp_path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"old")
    indexed = local(p)
    p.write_bytes(b"being written by the user")
    with pytest.raises(FileChangedError):
        write_file(tmp_path, "f", iter([b"remote"]), size=6, mode=0o644, mtime=0, expect=indexed)
    with pytest.raises(FileChangedError):
        write_file(tmp_path, "g-new", iter([b"x"]), size=1, mode=0o644, mtime=0,
                   expect=LocalFile(1, 1))  # expected a file that is not there
    (tmp_path / "h").write_bytes(b"appeared")
    with pytest.raises(FileChangedError):
        write_file(tmp_path, "h", iter([b"x"]), size=1, mode=0o644, mtime=0, expect=None)
    assert p.read_bytes() == b"being written by the user" and leftovers(tmp_path) == []


def test_a_change_during_the_write_is_caught_before_the_rename(tmp_path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"old")
    indexed = local(p)

    def racing():
        yield b"remote"
        p.write_bytes(b"the user saved meanwhile")

    with pytest.raises(FileChangedError):
        write_file(tmp_path, "f", racing(), size=6, mode=0o644, mtime=0, expect=indexed)
    assert p.read_bytes() == b"the user saved meanwhile" and leftovers(tmp_path) == []


def test_never_writes_through_a_symlinked_directory(tmp_path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "docs")
    with pytest.raises(UnsafePathError):
        write_file(root, "docs/x", iter([b"x"]), size=1, mode=0o644, mtime=0, expect=None)
    assert list(outside.iterdir()) == []


def test_remove_and_move(tmp_path) -> None:
    a = tmp_path / "a"
    a.write_bytes(b"a")
    move_file(tmp_path, "a", "sub/b", local(a))
    b = tmp_path / "sub" / "b"
    assert b.read_bytes() == b"a" and not a.exists()
    (tmp_path / "c").write_bytes(b"c")
    with pytest.raises(FileChangedError):
        move_file(tmp_path, "sub/b", "c", local(b))  # never replaces a file
    stale = local(b)
    b.write_bytes(b"changed!")
    with pytest.raises(FileChangedError):
        remove_file(tmp_path, "sub/b", stale)
    remove_file(tmp_path, "sub/b", local(b))
    assert not b.exists()


def test_clean_temp(tmp_path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / ".cobox-tmp-abc").write_bytes(b"x")
    (tmp_path / "keep").write_bytes(b"x")
    assert clean_temp(tmp_path) == 1 and leftovers(tmp_path) == [] and (tmp_path / "keep").exists()
