"""Session-wide settings of the test run, for every test package.

The end-to-end tests start a few thousand Python processes (daemons, CLI commands, helper
peers), each importing cobox, networker and storage. Where the environment forbids writing
bytecode (``PYTHONDONTWRITEBYTECODE``, e.g. to keep a source tree clean), every one of them would
compile those ~30,000 lines again. Instead the child processes write and reuse their bytecode
under one cache directory outside the source tree (``PYTHONPYCACHEPREFIX``), shared by every
process of the run, pytest-xdist workers included (CPython writes a ``.pyc`` atomically). This
changes nothing the tests see but the time their processes take to start.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import pytest

if os.environ.get("PYTHONDONTWRITEBYTECODE") and not os.environ.get("PYTHONPYCACHEPREFIX"):
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / f"cobox-tests-pycache-{os.getuid()}")

# A background job of a non-interactive shell (``cmd &``, ``nohup``) starts with SIGINT ignored, and
# an ignored signal stays ignored in every child: a daemon or a ``log cat --follow`` that a test
# interrupts with SIGINT would never see it. The tests and their children get the SIGINT a terminal
# gives (Python's KeyboardInterrupt), however the run was launched.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Tests that measure this machine's responsiveness (a loop-lag bound the issue asks for): `make test`
# runs them after the parallel run, on their own (``-m alone``), so that the other pytest-xdist
# worker's daemons do not take the CPU they measure. Marked here, by file, to keep the marker next to
# the reason.
ALONE = {
    "tests/cobox/folders/test_merge_lag.py": "the event loop's lag while a folder merge runs (issue 11.9)",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.split("::")[0] in ALONE:
            item.add_marker(pytest.mark.alone)
