"""Ignore rules are a device's own (issue 11 item 2): a remote ``.coboxignore`` is never applied,
and an ``#include``d file can only add exclusions."""

import logging

from cobox.entries import decode_op, encode_op
from cobox.folders.chunking import chunk_id
from cobox.folders.ignore import IGNORE_FILE, IgnoreRules
from cobox.folders.model import ChunkRef, Put
from cobox.folders.scan import scan

from .helpers import T0, A, B
from .test_two_devices import Device, settle

VICTIM, ATTACKER = A, B


def _paths(log: list[tuple[bytes, bytes]]) -> set[str]:
    return {decode_op(d, author=a, seq=None).path for a, d in log}


def test_remote_empty_coboxignore_does_not_make_the_victim_upload_its_secret(tmp_path) -> None:
    blobs: dict[bytes, bytes] = {}
    log: list[tuple[bytes, bytes]] = []
    victim = Device(tmp_path / "victim", VICTIM, blobs, log)
    victim.root.mkdir()
    (victim.root / IGNORE_FILE).write_text("private/\n")
    (victim.root / "private").mkdir()
    (victim.root / "private" / "secret.key").write_bytes(b"-----BEGIN PRIVATE KEY-----")
    (victim.root / "notes.txt").write_text("shared")
    settle(victim)
    assert "private/secret.key" not in _paths(log)

    # The attacker (a member) records an empty .coboxignore, then one of negations, under its id.
    state = victim.state()
    empty = state.put(IGNORE_FILE, 0, 0o644, T0, (), ATTACKER, state.head(IGNORE_FILE))
    negation = b"!private/\n!private/secret.key\n"
    blobs[chunk_id(negation)] = negation
    ref = ChunkRef(chunk_id(negation), ATTACKER, 0, len(negation))
    negations = Put(IGNORE_FILE, len(negation), 0o644, T0 + 1, (ref,), empty.clock + 1, ATTACKER, empty.stamp)
    log += [(ATTACKER, encode_op(empty)), (ATTACKER, encode_op(negations))]
    settle(victim)
    assert victim.state().files[IGNORE_FILE].stamp == negations.stamp  # the attack is in the merged state
    for _ in range(4):
        settle(victim)
    assert not any(p.startswith("private/") for p in _paths(log))
    assert (victim.root / IGNORE_FILE).read_text() == "private/\n"  # the remote op was not applied
    assert "private/secret.key" not in victim.state().files
    assert {decode_op(d, author=a, seq=None).path for a, d in log if a == VICTIM} == {"notes.txt"}  # nor its rules


def test_coboxignore_is_never_scanned_or_recorded(tmp_path) -> None:
    (tmp_path / IGNORE_FILE).write_text("")
    (tmp_path / "a.txt").write_text("x")
    assert set(scan(tmp_path)) == {"a.txt"}
    assert IgnoreRules().match(IGNORE_FILE) and IgnoreRules()(IGNORE_FILE)
    assert not IgnoreRules().match("sub/" + IGNORE_FILE)  # a nested one is an ordinary file


def test_include_adds_exclusions(tmp_path) -> None:
    (tmp_path / IGNORE_FILE).write_text("*.log\n#include shared.ignore\n")
    (tmp_path / "shared.ignore").write_text("build/\n*.bak\n")
    rules = IgnoreRules.load(tmp_path)
    assert rules.match("x.log") and rules.match("build", is_dir=True) and rules.match("a/b.bak")
    assert not rules.match("shared.ignore") and not rules.match("src/main.py")


def test_include_cannot_remove_local_exclusions(tmp_path, caplog) -> None:
    (tmp_path / IGNORE_FILE).write_text("private/\n*.key\n#include shared.ignore\n")
    # What a hostile member might write into the shared, synced file:
    (tmp_path / "shared.ignore").write_text("!private/\n!*.key\n!private/secret.key\n**/tmp/\n")
    with caplog.at_level(logging.WARNING, logger="cobox.folders.ignore"):
        rules = IgnoreRules.load(tmp_path)
    assert rules.match("private", is_dir=True) and rules("private/secret.key") and rules("a/b.key")
    assert rules.match("x/tmp", is_dir=True)  # its plain patterns still add
    assert "can only add exclusions" in caplog.text and "!private/" in caplog.text
    # A negation in the included file cannot even undo one of its own additions out of order.
    assert IgnoreRules("", (("s", "*.bak\n!keep.bak\n"),)).match("keep.bak")


def test_include_of_missing_outside_or_nested_files_adds_nothing(tmp_path) -> None:
    root = tmp_path / "folder"
    root.mkdir()
    (tmp_path / "outside.ignore").write_text("*\n")
    (root / "link.ignore").symlink_to(tmp_path / "outside.ignore")
    (root / "inner.ignore").write_text("#include more.ignore\n*.a\n")
    (root / "more.ignore").write_text("*.b\n")
    (root / IGNORE_FILE).write_text("#include ../outside.ignore\n#include link.ignore\n#include nope\n"
                                    "#include inner.ignore\n")
    rules = IgnoreRules.load(root)
    assert not rules.match("x.txt") and rules.match("y.a") and not rules.match("y.b")
