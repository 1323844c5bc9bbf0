-- Schema 3: entries held outside the store (storage/outside.py, Feed.release).
--
-- A released entry keeps its row in `entries` with its size in `blob_size` and both `data` and
-- `blob_offset` NULL (a row no write made before: every stored entry has one of them). The row
-- is the record: the entry is still held (its key is in the feed's `have`), its leaf and the
-- parent of its pair are in `nodes` (written by the same transaction), and the namespace's
-- rebuilder reproduces its bytes on demand. Deleting the row (a clear, or a rebuild that
-- failed) is the only way out. This partial index finds them when the store opens.
CREATE INDEX entries_outside ON entries (key) WHERE data IS NULL AND blob_offset IS NULL;
