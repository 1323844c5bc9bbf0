"""storage: signed append-only feeds (BLAKE3 Merkle trees, Ed25519) in one SQLite database."""

from .errors import StorageError
from .events import FeedEvent
from .feed import Feed
from .outside import Rebuilder
from .proof import Proof, SignedTree, verify_range
from .ranges import RangeSet
from .rows import RecordScope
from .store import DiskUse, Store

__all__ = [
    "DiskUse", "Feed", "FeedEvent", "Proof", "RangeSet", "Rebuilder", "RecordScope", "SignedTree", "StorageError",
    "Store", "verify_range",
]
