import logging
import os
import unicodedata

import pytest

from cobox.folders.chunking import content_id
from cobox.folders.ignore import IgnoreRules
from cobox.folders.scan import file_content, scan


def test_scan_regular_files(tmp_path) -> None:
    (tmp_path / "a.txt").write_bytes(b"hello")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "deeper" / "b.bin").write_bytes(b"\0" * 100)
    (tmp_path / "empty").write_bytes(b"")
    os.chmod(tmp_path / "a.txt", 0o640)
    index = scan(tmp_path)
    assert set(index) == {"a.txt", "sub", "sub/deeper", "sub/deeper/b.bin", "empty"}  # directories too
    assert index["sub"].is_dir and (index["sub"].size, index["sub"].mtime) == (0, 0) and not index["a.txt"].is_dir
    assert index["a.txt"].size == 5 and index["a.txt"].mode == 0o640
    assert index["a.txt"].mtime == (tmp_path / "a.txt").stat().st_mtime_ns
    assert index["empty"].size == 0 and index["empty"].content is None


def test_scan_skips_symlinks_and_special_files(tmp_path, caplog) -> None:
    (tmp_path / "real").write_bytes(b"x")
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    os.symlink("/etc", tmp_path / "dirlink")
    os.mkfifo(tmp_path / "fifo")
    with caplog.at_level(logging.INFO, logger="cobox.folders.scan"):
        index = scan(tmp_path)
    assert set(index) == {"real", "outside"}
    text = caplog.text
    assert "symlink" in text and "link" in text and "special file" in text and "fifo" in text


def test_scan_honours_ignore_rules_and_skips_temp_files(tmp_path) -> None:
    (tmp_path / ".coboxignore").write_text("*.log\nnode_modules/\n")
    (tmp_path / "x.log").write_text("x")
    (tmp_path / "node_modules" / "pkg").mkdir(parents=True)
    (tmp_path / "node_modules" / "pkg" / "i.js").write_text("x")
    (tmp_path / ".cobox-tmp-0123").write_text("partial")
    (tmp_path / "keep.txt").write_text("x")
    assert set(scan(tmp_path)) == {"keep.txt"}  # the local rules file is not synced
    assert set(scan(tmp_path, IgnoreRules())) == {"keep.txt", "x.log", "node_modules", "node_modules/pkg",
                                                  "node_modules/pkg/i.js"}


def test_scan_unicode_names_are_nfc(tmp_path) -> None:
    nfd = unicodedata.normalize("NFD", "café.txt")
    (tmp_path / nfd).write_text("x")
    (tmp_path / "日本語").mkdir()
    (tmp_path / "日本語" / "ファイル").write_text("y")
    assert set(scan(tmp_path)) == {"café.txt", "日本語", "日本語/ファイル"}


def test_scan_skips_undecodable_names(tmp_path) -> None:
    try:
        with open(os.path.join(os.fsencode(tmp_path), b"bad\xff"), "wb") as f:
            f.write(b"x")
    except OSError:
        pytest.skip("this file system refuses non-UTF-8 names")
    (tmp_path / "ok").write_text("x")
    assert set(scan(tmp_path)) == {"ok"}


def test_content_ids_on_demand(tmp_path) -> None:
    (tmp_path / "a").write_bytes(b"abc" * 100_000)
    (tmp_path / "b").write_bytes(b"")
    index = scan(tmp_path, want_content=lambda path, size, mtime: path == "a")
    assert index["a"].content == file_content(tmp_path / "a")[0] and index["b"].content is None
    assert file_content(tmp_path / "b") == (content_id([]), 0)
