"""``cobox logs`` as a user runs it: the tail of HOME/daemon.log, ``--follow`` printing new lines,
and a clear message for a home without a log."""

from __future__ import annotations

import asyncio
import sys

from tests.integration.daemons import ROOT, cli, env


async def test_logs_tail_follow_and_missing_log(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    rc, _, err = await cli(home, "logs")
    assert rc == 1 and "no daemon log at" in err and "journalctl --user -u cobox" in err
    log = home / "daemon.log"
    log.write_text("".join(f"ts=x level=info msg=\"line {i}\"\n" for i in range(100)))
    rc, out, _ = await cli(home, "logs", "-n", "2")
    assert rc == 0 and out.splitlines() == ['ts=x level=info msg="line 98"', 'ts=x level=info msg="line 99"']
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cobox.cli", "--home", str(home), "logs", "--follow", "-n", "1",
        stdout=asyncio.subprocess.PIPE, env=env(), cwd=ROOT)
    try:
        async with asyncio.timeout(30):
            assert (await proc.stdout.readline()).decode().strip().endswith('"line 99"')
            with open(log, "a") as f:
                f.write("ts=y level=warning msg=\"new\"\n")
            assert (await proc.stdout.readline()).decode().strip() == 'ts=y level=warning msg="new"'
    finally:
        proc.kill()
        await proc.wait()
