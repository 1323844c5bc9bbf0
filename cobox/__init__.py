"""cobox: peer-to-peer sync and backup. Importing it first checks the Python version, so that an
older Python says what is wrong instead of failing on syntax or a missing module further in."""

import sys

if sys.version_info < (3, 11):  # noqa: UP036 - the guard is for interpreters older than the minimum
    sys.exit(f"cobox needs Python 3.11 or newer; this is Python {'.'.join(map(str, sys.version_info[:3]))} "
             f"({sys.executable}). "
             "Install it with a newer one, e.g. `pipx install --python python3.11 cobox`.")
