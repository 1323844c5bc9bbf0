"""The store's SQL text: every statement :mod:`storage.rows` runs, by name.

The key layout these statements rely on (``(feed_id << KEY_SHIFT) | n``) is explained in
:mod:`storage.rows` and ``sql/0001_feeds.sql``; only :mod:`storage.rows` uses these names (and
:mod:`storage.db`, for the insert a write job carries).
"""

from __future__ import annotations

INSERT_NODE = "INSERT OR IGNORE INTO nodes (key, hash) VALUES (?, ?)"
UPSERT_SIGNATURE = (
    "INSERT INTO signatures (feed_id, length, tree_hash, signature) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (feed_id) DO UPDATE SET length = excluded.length, "
    "tree_hash = excluded.tree_hash, signature = excluded.signature "
    "WHERE excluded.length > signatures.length"
)
INSERT_FEED = (
    "INSERT INTO feeds (id, public_key, secret_key, namespace, created_at) VALUES (?, ?, ?, ?, ?)"
)
INSERT_FORK = (
    "INSERT INTO forks (feed_id, length_a, tree_hash_a, signature_a, length_b, tree_hash_b, "
    "signature_b, node_index, hash_a, hash_b, detected_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
MARK_FORKED = "UPDATE feeds SET forked = 1 WHERE id = ?"
UPSERT_RECORD = (
    "INSERT INTO records (scope, key, value) VALUES (?, ?, ?) "
    "ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value"
)
DELETE_RECORD = "DELETE FROM records WHERE scope = ? AND key = ?"
DELETE_SCOPE = "DELETE FROM records WHERE scope = ?"
SCOPES = "SELECT DISTINCT scope FROM records ORDER BY scope"

ENTRY = "SELECT data, blob_offset, blob_size FROM entries WHERE key = ?"
ENTRIES = "SELECT data, blob_offset, blob_size FROM entries WHERE key >= ? AND key < ? ORDER BY key"
PREFIXES = "SELECT key, substr(data, 1, ?), blob_offset FROM entries WHERE key >= ? AND key < ? ORDER BY key"
ENTRY_SIZES = "SELECT COALESCE(blob_size, length(data)) FROM entries WHERE key >= ? AND key < ? ORDER BY key"
NODES_BETWEEN = "SELECT key, hash FROM nodes WHERE key BETWEEN ? AND ?"
FEEDS = (
    "SELECT f.id, f.public_key, f.secret_key, f.namespace, f.forked, s.length, s.tree_hash, s.signature "
    "FROM feeds f LEFT JOIN signatures s ON s.feed_id = f.id ORDER BY f.id"
)
# Gaps and islands: consecutive keys of one feed share (key - row_number).
ISLANDS = (
    "SELECT key >> ?1, MIN(key & ?2), MAX(key & ?2) FROM ("
    "  SELECT key, key - ROW_NUMBER() OVER (ORDER BY key) AS island FROM entries"
    ") GROUP BY key >> ?1, island"
)
FEED_SIZES = (
    "SELECT key >> ?1, SUM(COALESCE(blob_size, length(data))) FROM entries "
    "WHERE data IS NOT NULL OR blob_offset IS NOT NULL GROUP BY key >> ?1"
)
FORK_FIELDS = ("length_a", "tree_hash_a", "signature_a", "length_b", "tree_hash_b", "signature_b",
                "node_index", "hash_a", "hash_b", "detected_at")
FORKS = f"SELECT {', '.join(FORK_FIELDS)} FROM forks WHERE feed_id = ? ORDER BY id"
RECORDS = "SELECT key, value FROM records WHERE scope = ? ORDER BY key"
RECORD = "SELECT value FROM records WHERE scope = ? AND key = ?"
RECORDS_SIZE = "SELECT COALESCE(SUM(LENGTH(value)), 0) FROM records WHERE scope = ?"
BLOB_END = "SELECT value FROM meta WHERE key = 'blob_end'"
META = "SELECT value FROM meta WHERE key = ?"
SET_META = "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
DELETE_META = "DELETE FROM meta WHERE key = ?"

# Clearing and deleting (0002_clearing.sql). The extents of deleted blob rows are recorded in
# blob_free by the same transaction, before the rows go.
FREE_BLOBS = (
    "INSERT OR IGNORE INTO blob_free (\"offset\", size) SELECT blob_offset, blob_size FROM entries "
    "WHERE key >= ? AND key < ? AND blob_offset IS NOT NULL"
)
DELETE_ENTRIES = "DELETE FROM entries WHERE key >= ? AND key < ?"
DELETE_NODES = "DELETE FROM nodes WHERE key >= ? AND key < ?"
DELETE_CLEARED = "DELETE FROM cleared WHERE feed_id = ?"
INSERT_CLEARED = "INSERT INTO cleared (feed_id, start, \"end\") VALUES (?, ?, ?)"
CLEARED = "SELECT feed_id, start, \"end\" FROM cleared ORDER BY feed_id, start"
DELETE_SIGNATURE = "DELETE FROM signatures WHERE feed_id = ?"
DELETE_FORKS = "DELETE FROM forks WHERE feed_id = ?"
DELETE_FEED = "DELETE FROM feeds WHERE id = ?"
BLOB_FREE = "SELECT \"offset\", size FROM blob_free ORDER BY \"offset\""
FORGET_FREE = "DELETE FROM blob_free WHERE \"offset\" = ?"
BLOB_SIZES = (
    "SELECT key >> ?1, COALESCE(SUM(blob_size), 0) FROM entries WHERE blob_offset IS NOT NULL GROUP BY key >> ?1"
)

# Entries held outside the store (0003_outside.sql, storage/outside.py): the row keeps its size,
# ``data`` and ``blob_offset`` are NULL. Their islands and sizes are read through the partial index.
OUTSIDE_WHERE = "data IS NULL AND blob_offset IS NULL"
RELEASE = (
    f"UPDATE entries SET blob_size = COALESCE(blob_size, length(data)), data = NULL, blob_offset = NULL "
    f"WHERE key >= ? AND key < ? AND NOT ({OUTSIDE_WHERE})"
)
OUTSIDE_ISLANDS = (
    "SELECT key >> ?1, MIN(key & ?2), MAX(key & ?2), SUM(blob_size) FROM ("
    f"  SELECT key, blob_size, key - ROW_NUMBER() OVER (ORDER BY key) AS island FROM entries WHERE {OUTSIDE_WHERE}"
    ") GROUP BY key >> ?1, island"
)
INSERT_OUTSIDE = "INSERT OR IGNORE INTO entries (key, data, blob_offset, blob_size) VALUES (?, NULL, NULL, ?)"
SLOTS = "SELECT key, data, blob_offset, blob_size FROM entries WHERE key >= ? AND key < ? ORDER BY key"

BLOB_EXTENTS = "SELECT key, blob_offset, blob_size FROM entries WHERE blob_offset IS NOT NULL ORDER BY blob_offset"
MOVE_BLOB = "UPDATE entries SET blob_offset = ? WHERE key = ?"
FORGET_ALL_FREE = "DELETE FROM blob_free"
