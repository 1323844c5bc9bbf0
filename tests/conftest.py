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
import tempfile
from pathlib import Path

if os.environ.get("PYTHONDONTWRITEBYTECODE") and not os.environ.get("PYTHONPYCACHEPREFIX"):
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / f"cobox-tests-pycache-{os.getuid()}")
