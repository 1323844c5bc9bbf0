"""The daemon log of ``cobox start`` rotates (in a child process: the handler moves the process's
stdout and stderr onto the new file, which must not happen to pytest's own)."""

from __future__ import annotations

import subprocess
import sys

from tests.integration.daemons import ROOT, env

SCRIPT = """
import logging, sys
from cobox import commands_daemon as cd
cd.LOG_MAX_BYTES = 2000
cd.setup_logging("info", sys.argv[1])
for i in range(200):
    logging.getLogger("cobox.test").info("event %d", i)
print("a plain print after the rollovers", flush=True)
print("and a line on stderr", file=sys.stderr, flush=True)
"""


def test_daemon_log_rotates_keeps_three_and_stdout_follows(tmp_path):
    log = tmp_path / "daemon.log"
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(log)], env=env(), cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["daemon.log", "daemon.log.1", "daemon.log.2", "daemon.log.3"]
    assert all((tmp_path / f).stat().st_mode & 0o777 == 0o600 for f in files)
    assert all((tmp_path / f).stat().st_size <= 2000 + 200 for f in files)
    current = log.read_text()
    assert 'msg="event 199"' in current and current.startswith("ts=")
    assert "a plain print after the rollovers" in current and "and a line on stderr" in current
    assert r.stdout == "" and r.stderr == ""
