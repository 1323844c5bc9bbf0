"""What a feed tells its listeners after a commit (``Feed.listen``, ``Feed.wait_change``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """What changed: ``append`` (this device wrote) or ``download`` (a replica stored
    verified entries), the entries ``[start, end)`` now stored, and the feed's signed length;
    or ``clear``: ``[start, end)`` is no longer stored here."""

    kind: Literal["append", "download", "clear"]
    start: int
    end: int
    length: int


__all__ = ["FeedEvent"]
