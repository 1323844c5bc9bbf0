"""What a folder's round carries out of its plan: folder type, stable-file wait, and the
explicit requests (rescan now, override, revert). The one place ``FolderSync.round`` asks.

Theory of operation
-------------------
``FolderSync.round`` merges, scans and plans, then hands the plan to :meth:`Gate.admit`, which

1. takes the requests made since the last round (``request``): an *override* (send-only) or a
   *revert* (receive-only) replaces the plan with :func:`.kinds.override` /
   :func:`.kinds.revert` computed from the same inputs; otherwise the plan is filtered by the
   folder's type (:func:`.kinds.restrict`), and the paths held back are kept for ``status``;
2. drops the ``RecordPut`` of files not stable yet (:class:`.stable.StableFiles`) and, if any
   wait, schedules a round (``wake``) for when they can be;

and at the end of the round :meth:`Gate.round_done` resolves the futures of the requests that
round carried out, so ``cobox folder rescan`` / ``override`` / ``revert`` answer once it is
done. A round that fails before its end leaves its requests to the next round. Everything here
runs on the event loop, between the round's awaits; the pure decisions live in ``kinds`` and
``stable``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import UsageError
from . import kinds
from .kinds import FolderKind
from .merge import FolderState
from .plan import Action, LocalFile, Synced
from .stable import StableFiles

MAX_HELD_SHOWN = 100  # paths listed in status (all are counted)
REQUESTS = ("rescan", "override", "revert")
_NEEDS = {"override": FolderKind.SEND_ONLY, "revert": FolderKind.RECEIVE_ONLY}


class Gate:
    def __init__(self, wake: Callable[[], None], *, kind: FolderKind = FolderKind.SEND_RECEIVE,
                 stable_wait: float = 0.0) -> None:
        self.kind = kind
        self.stable = StableFiles(stable_wait)
        self.held: list[str] = []  # paths the folder's type holds back (see kinds.restrict)
        self._wake = wake
        self._timer: asyncio.TimerHandle | None = None
        self._requests: list[tuple[str, asyncio.Future[None]]] = []
        self._running: list[tuple[str, asyncio.Future[None]]] = []  # taken by the round under way

    def request(self, what: str) -> asyncio.Future[None]:
        """Ask the next round for ``what`` (one of ``REQUESTS``); the future is done when a round
        carried it out. ``UsageError`` for an override of a folder that is not send-only, or a
        revert of one that is not receive-only."""
        if what not in REQUESTS:
            raise UsageError(f"unknown folder request {what!r}")
        need = _NEEDS.get(what)
        if need is not None and self.kind is not need:
            raise UsageError(f"{what} is for a {need.value} folder; this one is {self.kind.value}")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._requests.append((what, fut))
        self._wake()
        return fut

    def admit(self, state: FolderState, local: Mapping[str, LocalFile], synced: Mapping[str, Synced],
              actions: Sequence[Action], ignored: Callable[[str], bool] | None = None) -> list[Action]:
        """The actions this round carries out (see the module docstring)."""
        left = [r for r in self._running if not r[1].done()]  # a round that failed before its end
        self._running, self._requests = left + self._requests, []
        asked = {what for what, _ in self._running if _NEEDS.get(what) is self.kind}
        if "override" in asked:
            out = kinds.override(state, local, synced, ignored)
            self.held = []
        elif "revert" in asked:
            out = kinds.revert(state, local, synced, ignored)
            self.held = []
        else:
            out, self.held = kinds.restrict(self.kind, actions)
        out, again = self.stable.admit(out)
        if again is not None:
            self._schedule(again)
        return out

    def round_done(self) -> None:
        for _, fut in self._running:
            if not fut.done():
                fut.set_result(None)
        self._running = []

    def _schedule(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            if self._timer.when() <= loop.time() + delay:
                return  # a round comes soon enough already
            self._timer.cancel()
        self._timer = loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._wake()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for _, fut in self._running + self._requests:
            if not fut.done():
                fut.cancel()

    def status(self) -> dict[str, Any]:
        return {"type": self.kind.value, "out_of_sync": len(self.held), "out_of_sync_paths": self.held[:MAX_HELD_SHOWN],
                "waiting_stable": self.stable.waiting}


async def ask(gate: Gate, what: str, wait: float) -> bool:
    """Request ``what`` of a folder and wait (at most ``wait`` seconds) for a round to carry it
    out; whether one did (False: it is still asked, the next round does it)."""
    fut = gate.request(what)
    try:
        async with asyncio.timeout(wait):
            await asyncio.shield(fut)
    except TimeoutError:
        return False
    return True
