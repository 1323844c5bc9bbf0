"""The daemon's supervisor: every long-running piece of the daemon is a named service under it.

Theory of operation
-------------------
One :class:`asyncio.TaskGroup`, owned by one runner task, holds a guard task per service. A
service is a *coroutine factory*: ``spawn(name, factory, restart=..., fatal=...)`` runs
``factory()`` inside its guard, which is the only place a service's failure goes:

- the coroutine returns: the service is ``done`` (a fatal service that ends by itself while the
  supervisor is not stopping is a failure: the thing it watched is gone);
- it raises: the error is logged with its traceback and kept as ``last_error``. A ``fatal``
  service fails the whole supervisor: :attr:`Supervisor.fatal` holds a
  :class:`~cobox.errors.FatalServiceError` naming the service and the cause, and the
  ``on_fatal`` callback asks the owner (the daemon) to stop, which then exits non-zero with that
  one-line message. ``restart="backoff"`` restarts it after an exponential delay with jitter
  (``base * factor ** (n - 1)``, at most ``cap``, times a random factor in ``[1 - jitter, 1]``;
  ``n`` counts failures in a row and starts again at 1 once a run lasted ``reset_after``
  seconds); ``restart="never"`` leaves it ``failed``.

Nothing a service raises reaches the task group, so one failing service never cancels the
others; a service ends only by itself or by :meth:`Supervisor.cancel` / :meth:`Supervisor.stop`.
``stop()`` cancels the services one at a time in reverse spawn order, awaiting each (a service
closes what it owns in a ``finally``: see :func:`hold`; a service spawned but not yet started is
let start first, so its ``finally`` is armed), then ends the task group and its runner:
afterwards no task of the supervisor's is left.

The sleep, the clock and the random source are injected, so the restart logic is tested with
fake coroutines and a fake clock, deterministically.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from networker import backoff_delay as capped

from .errors import FatalServiceError

log = logging.getLogger("cobox.supervisor")

Restart = Literal["never", "backoff"]
Factory = Callable[[], Coroutine[Any, Any, None]]


class State(enum.Enum):
    """What a service is doing now."""

    RUNNING = "running"
    BACKOFF = "backoff"  # failed; waiting to be restarted
    DONE = "done"  # returned by itself
    FAILED = "failed"  # raised and will not be restarted
    STOPPED = "stopped"  # cancelled by stop() or cancel()


@dataclass(frozen=True)
class Backoff:
    """Restart delays: exponential with jitter, capped."""

    base: float = 1.0
    factor: float = 2.0
    cap: float = 60.0
    jitter: float = 0.5  # the delay is scaled by a random factor in [1 - jitter, 1]
    reset_after: float = 60.0  # a run this long clears the failure count

    def delay(self, failures: int, rnd: float) -> float:
        """The wait before restart number ``failures`` (>= 1); ``rnd`` is uniform in [0, 1)."""
        raw = capped(self.base, self.cap, failures, self.factor)
        return raw * (1.0 - self.jitter * rnd)


@dataclass(frozen=True)
class ServiceInfo:
    """A service as ``status`` shows it."""

    name: str
    state: str
    restarts: int
    last_error: str
    fatal: bool
    restart: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "restarts": self.restarts,
                "last_error": self.last_error, "fatal": self.fatal, "restart": self.restart}


@dataclass(eq=False)
class _Service:
    name: str
    factory: Factory
    restart: Restart
    fatal: bool
    state: State = State.RUNNING
    restarts: int = 0
    last_error: str = ""
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    cancelling: bool = False
    entered: bool = False  # the guard has run its first step

    def info(self) -> ServiceInfo:
        return ServiceInfo(self.name, self.state.value, self.restarts, self.last_error, self.fatal, self.restart)


class Supervisor:
    """Runs named services in one task group; see the module docstring."""

    def __init__(self, *, backoff: Backoff = Backoff(), on_fatal: Callable[[FatalServiceError], None] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 rand: Callable[[], float] = random.random, cancel_grace: float = 10.0) -> None:
        self.backoff = backoff
        self.cancel_grace = cancel_grace
        self.on_fatal = on_fatal
        self.fatal: FatalServiceError | None = None
        self._sleep = sleep
        self._clock = clock
        self._rand = rand
        self._services: list[_Service] = []
        self._group: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._failed = asyncio.Event()
        self._stopping = False

    # -- life ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            return
        self._runner = asyncio.get_running_loop().create_task(self._main(), name="supervisor")
        await self._ready.wait()

    async def __aenter__(self) -> Supervisor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _main(self) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            self._ready.set()
            await self._closing.wait()
        self._group = None

    async def stop(self) -> None:
        """Cancel every service, the last spawned first, then end the task group."""
        self._stopping = True
        for svc in reversed(list(self._services)):  # a closing service may cancel() others
            await self._cancel(svc)
        self._closing.set()
        if self._runner is not None:
            await self._runner
            self._runner = None

    async def wait_failed(self) -> FatalServiceError:
        """Return once a fatal service has failed."""
        await self._failed.wait()
        assert self.fatal is not None
        return self.fatal

    # -- services -----------------------------------------------------------------------------

    def spawn(self, name: str, factory: Factory, *, restart: Restart = "never", fatal: bool = False) -> None:
        """Run ``factory()`` as the service ``name`` (a finished service's name may be reused)."""
        if self._group is None or self._stopping:
            raise RuntimeError(f"the supervisor is not running: cannot start {name!r}")
        if restart not in ("never", "backoff"):
            raise ValueError(f"restart must be 'never' or 'backoff', not {restart!r}")
        old = self._find(name)
        if old is not None:
            if old.task is not None and not old.task.done():
                raise ValueError(f"a service named {name!r} is already running")
            self._services.remove(old)
        svc = _Service(name, factory, restart, fatal)
        self._services.append(svc)
        svc.task = self._group.create_task(self._guard(svc), name=f"service:{name}")

    async def cancel(self, name: str) -> None:
        """Stop one service (it closes what it holds) and forget it."""
        svc = self._find(name)
        if svc is not None:
            await self._cancel(svc)
            if svc in self._services:
                self._services.remove(svc)

    def status(self) -> list[ServiceInfo]:
        return [s.info() for s in self._services]

    def get(self, name: str) -> ServiceInfo | None:
        svc = self._find(name)
        return svc.info() if svc is not None else None

    def _find(self, name: str) -> _Service | None:
        return next((s for s in self._services if s.name == name), None)

    async def _cancel(self, svc: _Service) -> None:
        task = svc.task
        if task is None or task.done():
            return
        svc.cancelling = True
        if not svc.entered:
            # A task cancelled before its first step never runs its body, so a service that
            # holds an object already open (``hold``) would never close it: let it start first.
            # The guard was scheduled before this task resumes, so one turn of the loop is enough.
            await asyncio.sleep(0)
        # The guard never raises. A service that swallows its cancellation (asyncio.wait_for
        # on 3.11 can) is cancelled again, with a warning, until it ends.
        while True:
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=self.cancel_grace)
            if done:
                return
            log.warning("service %s did not stop within %.0f s of its cancellation: cancelling again",
                        svc.name, self.cancel_grace)

    async def _guard(self, svc: _Service) -> None:
        svc.entered = True
        failures = 0
        while True:
            svc.state = State.RUNNING
            began = self._clock()
            try:
                await svc.factory()
            except asyncio.CancelledError:
                svc.state = State.STOPPED
                return  # the guard absorbs its own cancellation: nothing reaches the task group
            except Exception as e:  # the one place a service's failure goes
                svc.last_error = _describe(e)
                if svc.cancelling or self._stopping:
                    log.warning("service %s failed while stopping: %s", svc.name, svc.last_error)
                    svc.state = State.STOPPED
                    return
                log.error("service %s failed: %s", svc.name, svc.last_error, exc_info=e)
                if svc.fatal:
                    svc.state = State.FAILED
                    self._fail(svc, svc.last_error)
                    return
                if svc.restart == "never":
                    svc.state = State.FAILED
                    return
            else:
                if svc.fatal and not (svc.cancelling or self._stopping):
                    svc.state = State.FAILED
                    svc.last_error = "ended unexpectedly"
                    log.error("service %s ended unexpectedly", svc.name)
                    self._fail(svc, svc.last_error)
                    return
                svc.state = State.DONE
                return
            failures = 1 if self._clock() - began >= self.backoff.reset_after else failures + 1
            delay = self.backoff.delay(failures, self._rand())
            svc.state = State.BACKOFF
            log.info("service %s restarts in %.1f s (failure %d in a row)", svc.name, delay, failures)
            try:
                await self._sleep(delay)
            except asyncio.CancelledError:
                svc.state = State.STOPPED
                return
            svc.restarts += 1

    def _fail(self, svc: _Service, reason: str) -> None:
        if self.fatal is not None:
            return
        self.fatal = FatalServiceError(f"{svc.name} failed: {reason}; the daemon stopped")
        self._failed.set()
        if self.on_fatal is not None:
            self.on_fatal(self.fatal)


async def hold(close: Callable[[], Awaitable[Any]], watch: Callable[[], Awaitable[Any]] | None = None) -> None:
    """The body of a service for an object that runs by itself: wait until ``watch()`` ends
    (forever without one) and close the object when cancelled or when ``watch`` ends."""
    try:
        if watch is None:
            await asyncio.Event().wait()
        else:
            await watch()
    finally:
        await close()


def _describe(e: BaseException) -> str:
    """One line: our own errors (they carry a ``code``) by their message, others with their type."""
    text = " ".join(str(e).split())
    if text and hasattr(e, "code"):
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
