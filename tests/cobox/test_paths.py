"""The home's modes: ``Home.tighten`` on a made-up tree, no daemon."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cobox.paths import Home, write_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_tighten_takes_group_and_other_bits_from_everything_and_says_what(tmp_path):
    root = tmp_path / "home"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.toml").write_text("x")
    (root / "sub" / "b").write_text("x")
    (root / "private").write_text("x")
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    (root / "link").symlink_to(outside)
    for path, m in ((root, 0o755), (root / "sub", 0o775), (root / "sub" / "deeper", 0o700),
                    (root / "a.toml", 0o644), (root / "sub" / "b", 0o666), (root / "private", 0o600),
                    (outside, 0o644)):
        path.chmod(m)
    changes = Home(root).tighten()
    assert sorted(changes) == [".: 0755 -> 0700", "a.toml: 0644 -> 0600", "sub/b: 0666 -> 0600",
                               "sub: 0775 -> 0700"]
    assert [mode(p) for p in (root, root / "sub", root / "sub" / "deeper")] == [0o700] * 3
    assert [mode(p) for p in (root / "a.toml", root / "sub" / "b", root / "private")] == [0o600] * 3
    assert mode(outside) == 0o644  # a symlink is not followed out of the home
    assert Home(root).tighten() == []  # said once: the next start finds nothing


def test_ensure_makes_a_private_home_and_write_private_a_private_file(tmp_path):
    old = os.umask(0o022)
    try:
        home = Home(tmp_path / "new" / "home")
        home.ensure()
        write_private(home.login_page, b"<html>")
    finally:
        os.umask(old)
    assert mode(home.root) == 0o700 and mode(home.login_page) == 0o600
