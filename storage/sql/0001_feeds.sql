-- Schema 1: feeds, their entries, Merkle tree nodes, signed roots and fork evidence.
--
-- Entries and nodes are keyed by one integer, (feed_id << 42) | n, instead of a composite
-- (feed_id, n) key. The row then lives in the table's own rowid b-tree: one b-tree insert per
-- row, rows of one feed stored in order, range scans by `key BETWEEN`, and no overflow pages
-- for 1 KiB+ payloads (which a WITHOUT ROWID table would spill). 42 bits leave room for
-- 2^41 entries per feed (node index < 2^42) and 2^21 feeds per store.

CREATE TABLE feeds (
    id          INTEGER PRIMARY KEY,          -- < 2^21, see above
    public_key  BLOB NOT NULL UNIQUE,         -- Ed25519 public key: the feed key
    secret_key  BLOB,                         -- 32-byte Ed25519 seed; NULL for replicas
    namespace   TEXT NOT NULL DEFAULT '',     -- the group the feed belongs to
    forked      INTEGER NOT NULL DEFAULT 0,   -- 1 once two conflicting signed trees were seen
    created_at  REAL NOT NULL
);
CREATE INDEX feeds_by_namespace ON feeds (namespace);

-- One row per stored entry: key = (feed_id << 42) | seq. Small entries are stored inline in
-- `data`; large ones (see storage/blobs.py) live in the store's append-only blob file at
-- [blob_offset, blob_offset + blob_size), with `data` NULL. SQLite writes every byte twice
-- (WAL, then checkpoint); the blob file writes large entries once.
CREATE TABLE entries (
    key          INTEGER PRIMARY KEY,
    data         BLOB,
    blob_offset  INTEGER,
    blob_size    INTEGER
);

-- Store-wide values: 'blob_end' is the committed length of the blob file; bytes past it are
-- the remains of a transaction that never committed and are cut off when the store opens.
CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
);
INSERT INTO meta (key, value) VALUES ('blob_end', 0);

-- One row per known tree node: key = (feed_id << 42) | flat-tree index. A node's hash never
-- changes once its span is complete, so a node is written once and never updated.
CREATE TABLE nodes (
    key   INTEGER PRIMARY KEY,
    hash  BLOB NOT NULL
);

-- The longest tree the writer signed that this store has verified (or made, for its own feeds).
CREATE TABLE signatures (
    feed_id    INTEGER PRIMARY KEY,
    length     INTEGER NOT NULL,
    tree_hash  BLOB NOT NULL,
    signature  BLOB NOT NULL
);

-- Evidence of a fork: two valid signatures over trees that disagree.
CREATE TABLE forks (
    id            INTEGER PRIMARY KEY,
    feed_id       INTEGER NOT NULL,
    length_a      INTEGER NOT NULL,
    tree_hash_a   BLOB NOT NULL,
    signature_a   BLOB NOT NULL,
    length_b      INTEGER NOT NULL,
    tree_hash_b   BLOB NOT NULL,
    signature_b   BLOB NOT NULL,
    node_index    INTEGER,                    -- the node both trees hold with different hashes
    hash_a        BLOB,
    hash_b        BLOB,
    detected_at   REAL NOT NULL
);
CREATE INDEX forks_by_feed ON forks (feed_id);

-- Small records the layers above keep beside their feeds (group metadata, membership tags,
-- custody receipts), grouped by scope. Values are opaque to storage.
CREATE TABLE records (
    scope  TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  BLOB NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
