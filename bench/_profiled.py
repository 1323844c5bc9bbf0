"""Run a Python module under pyinstrument and write its profile when the process exits.

    python bench/_profiled.py OUT.txt PYTHON -m MODULE ARGS...

``bench/folder.py --profile DIR`` starts each daemon this way (as ``Daemon(wrap=...)``): the
profile of the daemon's main thread (the event loop) goes to ``OUT.txt`` as text, plus the CPU
time of every thread of the process (what the worker threads did is not in the profile).
"""

from __future__ import annotations

import atexit
import resource
import runpy
import sys


def main() -> None:
    out, _python, flag, module, *args = sys.argv[1:]
    if flag != "-m":
        raise SystemExit("usage: _profiled.py OUT PYTHON -m MODULE ARGS...")
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.002, async_mode="disabled")

    def write() -> None:
        profiler.stop()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with open(out, "w") as f:
            f.write(f"process CPU: user {usage.ru_utime:.2f} s, system {usage.ru_stime:.2f} s\n")
            f.write(profiler.output_text(unicode=True, show_all=False))

    atexit.register(write)
    sys.argv = [module, *args]
    profiler.start()
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
