"""Cases of the Syncthing reference bench that its command line does not offer (``mixed``: N
files of 1 MiB), run with its own code: ``case()`` of ``bench_syncthing.py`` (loaded from the
path given) with the same fill as ``bench/folder.py``'s. Prints its JSON row.

    python bench/_syncthing_cases.py PATH/bench_syncthing.py mixed N
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

from folder import mixed  # the same tree as bench/folder.py's (this script runs from bench/)


def main() -> None:
    script, name, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    if name != "mixed":
        raise SystemExit(f"unknown case {name!r}")
    spec = importlib.util.spec_from_file_location("bench_syncthing", script)
    assert spec is not None and spec.loader is not None
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    tmp = Path(tempfile.mkdtemp(prefix="syncthing-bench-"))
    try:
        reference.case(tmp, name, mixed(n))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
