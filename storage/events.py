"""What a feed tells its listeners after a commit (``Feed.listen``, ``Feed.wait_change``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """What changed: ``append`` (this device wrote) or ``download`` (a replica stored
    verified entries, or a writer its own entries back), the entries ``[start, end)`` now
    stored, and the feed's signed length; ``clear``: ``[start, end)`` is no longer stored here;
    or ``want``: a writer wants ``[start, end)`` of its own feed back from peers
    (:mod:`storage.healing`)."""

    kind: Literal["append", "download", "clear", "want"]
    start: int
    end: int
    length: int


__all__ = ["FeedEvent"]
