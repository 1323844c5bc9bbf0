import pytest

from cobox.folders.ignore import IgnoreRules

RULES = IgnoreRules("# comment\n*.tmp\n!keep.tmp\nbuild/\n/rootonly\n**/cache/**\n*.coboxignore-nope\n")


@pytest.mark.parametrize(("path", "is_dir", "expected"), [
    ("a.tmp", False, True),
    ("deep/er/a.tmp", False, True),
    ("x/keep.tmp", False, False),
    ("build", True, True),
    ("src/build", True, True),
    ("build", False, False),  # a file named build: the pattern is for directories
    ("rootonly", False, True),
    ("x/rootonly", False, False),
    ("a/cache/b", False, True),
    (".cobox-tmp-1a2b", False, True),
    ("d/.cobox-tmp-1a2b", False, True),
    (".cobox", True, True),
    (".coboxignore", False, True),  # this device's own, never synced
    ("notes.txt", False, False),
])
def test_match(path: str, is_dir: bool, expected: bool) -> None:
    assert RULES.match(path, is_dir) is expected


def test_call_checks_parent_directories() -> None:
    assert RULES("build/out/bin") and RULES("src/build/x") and not RULES("src/main.py")


def test_load(tmp_path) -> None:
    assert not IgnoreRules.load(tmp_path).match("a.tmp")
    assert IgnoreRules.load(tmp_path).match(".cobox-tmp-x")
    (tmp_path / ".coboxignore").write_text("*.log\n")
    assert IgnoreRules.load(tmp_path).match("x/y.log")
