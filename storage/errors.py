"""Errors raised by the storage layer.

Every error has a stable ``code`` and a docstring a user can read. ``VerificationError`` and its
subclasses mean that data handed to a replica did not check out: the caller should treat the
source as misbehaving (the network layer disconnects that peer). Nothing is stored when one is
raised.
"""

from __future__ import annotations


class StorageError(Exception):
    """A storage operation failed."""

    code = "storage_error"


class StoreClosedError(StorageError):
    """The store has been closed; no more reads or writes are possible."""

    code = "store_closed"


class WriterFailedError(StoreClosedError):
    """The store's writer task failed (see the daemon's log); nothing more can be written. The
    daemon stops: start it again."""

    code = "writer_failed"


class StoreFullError(StorageError):
    """The disk (or the database's size limit) is full. Nothing of this write was stored;
    everything committed before is intact. Free some space and retry."""

    code = "store_full"


class StoreReadOnlyError(StorageError):
    """The database is read-only (opened read-only, or its file or directory is not writable).
    Nothing of this write was stored."""

    code = "store_read_only"


class StoreCorruptError(StorageError):
    """The database file is not a cobox store or is damaged."""

    code = "store_corrupt"


class FeedNotFoundError(StorageError):
    """No feed with this public key is in the store."""

    code = "feed_not_found"


class NotWritableError(StorageError):
    """This feed is a read-only replica: only the holder of its secret key can append."""

    code = "not_writable"


class EntryMissingError(StorageError):
    """The requested entry is not stored here (yet)."""

    code = "entry_missing"


class RebuildUnavailableError(EntryMissingError):
    """An entry held outside the store cannot be rebuilt right now (its rebuilder is not set
    or not ready yet); it stays held and may be read later."""

    code = "rebuild_unavailable"


class EntryTooLargeError(StorageError):
    """An entry is larger than the store accepts."""

    code = "entry_too_large"


class WriteAbortedError(StorageError):
    """An append was built on top of a batch that failed to commit; it was not stored."""

    code = "write_aborted"


class VerificationError(StorageError):
    """Data offered to a replica did not verify; nothing was stored."""

    code = "verification_failed"


class MalformedProofError(VerificationError):
    """A proof does not have the shape its range and length require (missing, extra or
    misplaced nodes, impossible length)."""

    code = "malformed_proof"


class BadUpgradeError(MalformedProofError):
    """The upgrade nodes of a proof, with the roots this replica trusts, do not rebuild the tree
    the writer signed. Upgrade nodes are covered by no signature, so this is a bad proof from
    the peer that sent it (it is disconnected), never a sign that the writer forked."""

    code = "bad_upgrade"


class BadSignatureError(VerificationError):
    """The signature over the tree does not verify under the feed's public key."""

    code = "bad_signature"


class ForkError(VerificationError):
    """The writer signed two different trees for the same feed. The evidence is kept and the
    feed is marked forked; nothing from the conflicting tree is stored."""

    code = "fork_detected"


class StaleProofError(StorageError):
    """A proof was made for another length of the feed than the one this replica now holds
    (it was upgraded meanwhile, or cannot connect a shorter tree to its own). Nothing was stored;
    ask again. Not a sign of misbehaviour."""

    code = "stale_proof"


class ProofUnavailableError(StorageError):
    """This store lacks the tree nodes needed to prove the requested range."""

    code = "proof_unavailable"
