"""``cobox logs``: tail and follow of the daemon log across rotation and truncation; what the
daemon's logging keeps out of info level; a skipped symlink logged once, not on every rescan."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from cobox import logs
from cobox.commands_daemon import setup_logging
from cobox.errors import NoLogError
from cobox.folders.scan import scan


def test_tail_gives_the_last_complete_lines_and_where_they_end(tmp_path: Path) -> None:
    path = tmp_path / "daemon.log"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(20_000)) + b"partial")
    lines, end = logs.tail(path, 3)
    assert lines == ["line 19997", "line 19998", "line 19999"]
    assert end == path.stat().st_size - len(b"partial")
    assert logs.tail(path, 0)[0] == [] and logs.tail(tmp_path / "daemon.log", 50_000)[0][0] == "line 0"


async def _next(it, timeout: float = 10) -> str:
    async with asyncio.timeout(timeout):
        return await anext(it)


async def test_follow_sees_appends_partial_lines_rotation_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "daemon.log"
    path.write_text("old\n")
    _, end = logs.tail(path, 10)
    it = logs.follow(path, end, poll=0.01)
    try:
        with open(path, "a") as f:
            f.write("one\ntw")
        assert await _next(it) == "one"
        with open(path, "a") as f:
            f.write("o\n")
        assert await _next(it) == "two"  # a partial line waits for its newline
        os.rename(path, tmp_path / "daemon.log.1")  # rotated: a new file at the path
        path.write_text("after rotation\n")
        assert await _next(it) == "after rotation"
        with open(path, "r+") as f:  # copy-truncate, and a line shorter than what was read
            f.truncate(0)
            f.write("cut\n")
        assert await _next(it) == "cut"
    finally:
        await it.aclose()


async def test_show_prints_the_tail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "daemon.log"
    path.write_text("a\nb\nc\n")
    assert await logs.show(path, 2, False) == 0
    assert capsys.readouterr().out == "b\nc\n"


def test_no_log_says_where_the_log_is_instead(tmp_path: Path) -> None:
    with pytest.raises(NoLogError, match="journalctl --user -u cobox"):
        logs.log_path(tmp_path / "daemon.log")


def test_watchfiles_change_counts_stay_out_of_info() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("info")
        assert not logging.getLogger("watchfiles.main").isEnabledFor(logging.INFO)
        assert logging.getLogger("watchfiles.main").isEnabledFor(logging.WARNING)
        assert logging.getLogger("cobox.daemon").isEnabledFor(logging.INFO)
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        logging.getLogger("watchfiles").setLevel(logging.NOTSET)


def test_a_skipped_symlink_is_logged_once_not_on_every_rescan(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "real.txt").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "real.txt")
    with caplog.at_level(logging.INFO, logger="cobox.folders.scan"):
        for _ in range(3):
            assert set(scan(tmp_path)) == {"real.txt"}
        (tmp_path / "link2").symlink_to(tmp_path)
        scan(tmp_path)
        scan(tmp_path)
    said = [r.getMessage() for r in caplog.records if "symlink" in r.getMessage()]
    assert said == [f"skipping symlink {tmp_path / 'link'}", f"skipping symlink {tmp_path / 'link2'}"]


def test_startup_lines_off_a_terminal_are_logfmt_events(capsys: pytest.CaptureFixture[str]) -> None:
    from cobox.commands_daemon import say

    say("cobox: daemon ab12 running; home /h\ncobox: what to do next:")
    lines = capsys.readouterr().out.splitlines()  # not a terminal
    assert [line.split(" ", 1)[1] for line in lines] == [
        'level=info logger=cobox msg="daemon ab12 running; home /h"', 'level=info logger=cobox msg="what to do next:"']
    assert all(line.startswith("ts=") for line in lines)


def test_under_systemd_lines_carry_journal_priorities_and_no_timestamp(tmp_path: Path) -> None:
    from cobox.commands_daemon import LogfmtFormatter, logs_to_journal

    with open(tmp_path / "stream", "w") as f:
        st = os.fstat(f.fileno())
        assert logs_to_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, f.fileno())
        assert not logs_to_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, f.fileno())
        assert not logs_to_journal({}, f.fileno()) and not logs_to_journal({"JOURNAL_STREAM": "x"}, f.fileno())
    record = logging.LogRecord("cobox.x", logging.WARNING, __file__, 1, "disk %s", ("full",), None)
    assert LogfmtFormatter(journal=True).format(record) == '<4>level=warning logger=cobox.x msg="disk full"'
    assert LogfmtFormatter().format(record).startswith("ts=")
