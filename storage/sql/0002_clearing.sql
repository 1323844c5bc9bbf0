-- Schema 2: clearing (storage/feed.py Feed.clear) and leaving (Store.delete_feed).
--
-- A cleared entry's row in `entries` is deleted; the tree nodes its proofs and its neighbours'
-- proofs need (its leaf and the parent of its pair, which are otherwise recomputed from the
-- entries) are written to `nodes` in the same transaction, so the feed still verifies and
-- still serves proofs for every entry it keeps.

-- The ranges of a feed cleared on purpose: the replicator does not download them again.
-- One feed's rows are rewritten whole by every clear (the merged ranges), so they stay few.
CREATE TABLE cleared (
    feed_id  INTEGER NOT NULL,
    start    INTEGER NOT NULL,
    "end"    INTEGER NOT NULL,
    PRIMARY KEY (feed_id, start)
) WITHOUT ROWID;

-- Blob-file extents no row points at any more, written in the transaction that deleted their
-- rows. After the commit the store punches a hole over each (fallocate PUNCH_HOLE: the file
-- system frees the blocks) and deletes its row; an extent left here by a crash is punched
-- when the store next opens. Punching bytes nothing references is harmless, so this is
-- idempotent.
CREATE TABLE blob_free (
    "offset"  INTEGER PRIMARY KEY,
    size      INTEGER NOT NULL
);
