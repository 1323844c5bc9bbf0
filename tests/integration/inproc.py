"""Run one ``cobox`` client command inside the test process instead of a new Python process.

Theory of operation. Most end-to-end tests talk to their daemons through CLI commands, a thousand
and more in a run; each new ``python -m cobox.cli`` process spends most of its half second of CPU
importing cobox, aiohttp and rich. A client command is only an HTTP client of its daemon, so the
same entry point (:func:`cobox.cli.main`, which ``python -m cobox.cli`` runs) can be called here:

- in a thread of its own, with its own event loop (``main`` calls ``asyncio.run``), so the test's
  loop and its daemons' pipes keep running and several commands may run at once;
- with its own stdin, stdout and stderr: while any command runs, ``sys.stdin``/``sys.stdout``/
  ``sys.stderr`` are proxies that send each thread of a command to its own buffers and every other
  thread to the streams they replaced (pytest's capture), put back when the last command ends;
- seeing what the process would see: the child's environment drops every ``COBOX_`` variable
  (:func:`tests.integration.daemons.env`), so a command runs here only while this process has none
  (a test that sets one gets a real process), and with the working directory the process gets.

What needs a real process stays one (:func:`in_process` says which): ``daemon``, ``start`` (it
spawns a daemon from its own environment) and ``demo``, a ``--follow`` stream (a test interrupts it
with a signal), and commands given a working directory. Exit codes are the process's: ``main``'s
return value, ``SystemExit``'s code (usage errors, ``--help``), and 1 with the traceback on stderr
for an uncaught exception (what the interpreter does). A command that does not end in ``timeout``
fails the test; its thread is left behind (a daemon thread, it ends with its daemon's connection).
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

PROCESS_ONLY = frozenset({"daemon", "start", "demo"})
FORCE_PROCESS = "COBOX_TESTS_CLI_PROCESS"  # set (to anything) to run every command as a process


def in_process(args: tuple[str, ...], cwd: Path) -> bool:
    """Whether ``cobox ARGS`` can run in this process with the outcome a process would have."""
    if os.environ.get(FORCE_PROCESS) or any(k.startswith("COBOX_") for k in os.environ):
        return False
    if Path.cwd() != cwd or not args or args[0] in PROCESS_ONLY:
        return False
    return not any(a in ("--follow", "-f") for a in args)


class _Streams(threading.local):
    stdin: IO[str] | None = None
    stdout: IO[str] | None = None
    stderr: IO[str] | None = None


_mine = _Streams()


class _ThreadStream:
    """Stands for one of ``sys.std*``: a command's thread gets its own stream, others the original."""

    def __init__(self, name: str, original: Any) -> None:
        self._name = name
        self._original = original

    def _target(self) -> Any:
        own = getattr(_mine, self._name)
        return own if own is not None else self._original

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._target(), attr)

    def __iter__(self) -> Iterator[str]:
        return iter(self._target())


_running = 0
_NAMES = ("stdin", "stdout", "stderr")


@contextmanager
def _proxies() -> Iterator[None]:
    """``sys.std*`` are proxies while at least one command runs (entered and left on the loop's thread)."""
    global _running
    if _running == 0:
        for name in _NAMES:
            setattr(sys, name, _ThreadStream(name, getattr(sys, name)))
    _running += 1
    try:
        yield
    finally:
        _running -= 1
        if _running == 0:
            for name in _NAMES:
                current = getattr(sys, name)
                if isinstance(current, _ThreadStream):
                    setattr(sys, name, current._original)


def _text(data: bytes = b"") -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", write_through=True)


def _run(argv: list[str], stdin: bytes | None) -> tuple[int, str, str]:
    """The command's thread: ``main(argv)`` with this thread's own standard streams."""
    from cobox.cli import main

    out, err = _text(), _text()
    _mine.stdin, _mine.stdout, _mine.stderr = _text(stdin or b""), out, err
    try:
        rc = main(argv)
    except SystemExit as e:
        code = e.code
        if code is None or isinstance(code, int):
            rc = code or 0
        else:
            print(code, file=err)
            rc = 1
    except BaseException:  # what the interpreter does with an uncaught exception
        traceback.print_exc(file=err)
        rc = 1
    finally:
        _mine.stdin = _mine.stdout = _mine.stderr = None
    out.flush()
    err.flush()
    return rc, out.buffer.getvalue().decode(), err.buffer.getvalue().decode()  # type: ignore[attr-defined]


async def run_cli(argv: list[str], stdin: bytes | None, timeout: float) -> tuple[int, str, str]:
    """``cobox ARGV`` in a thread of this process: (exit code, stdout, stderr)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[int, str, str]] = loop.create_future()

    def finish(result: tuple[int, str, str] | BaseException) -> None:
        if done.done():
            return
        if isinstance(result, BaseException):
            done.set_exception(result)
        else:
            done.set_result(result)

    def work() -> None:
        try:
            result: tuple[int, str, str] | BaseException = _run(argv, stdin)
        except BaseException as e:  # handed to the waiting test
            result = e
        try:
            loop.call_soon_threadsafe(finish, result)
        except RuntimeError:  # the test's loop is closed: nobody waits any more
            pass

    with _proxies():
        threading.Thread(target=work, name=f"cobox {' '.join(argv[2:4])}", daemon=True).start()
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(done)
        except TimeoutError:
            raise AssertionError(f"cobox {' '.join(argv[2:])} did not finish in {timeout}s") from None
