"""``db.execute_rows``: an insert of many rows as one statement does exactly what
``executemany`` of the same rows does (duplicates, upserts, order, more rows than one
statement binds), and any other statement is left to ``executemany``."""

import sqlite3
from typing import Any

import pytest

from storage import db, statements


def _tables() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE nodes (key INTEGER PRIMARY KEY, hash BLOB) WITHOUT ROWID")
    conn.execute("CREATE TABLE signatures (feed_id INTEGER PRIMARY KEY, length INTEGER, tree_hash BLOB, "
                 "signature BLOB)")
    return conn


CASES = [
    (statements.INSERT_NODE, [(k % 7, bytes([k])) for k in range(20)]),  # duplicates: the first stays
    ("INSERT OR REPLACE INTO nodes (key, hash) VALUES (?, ?)", [(k % 5, bytes([k])) for k in range(12)]),  # the last
    (statements.UPSERT_SIGNATURE, [(1, 5, b"a", b"x"), (2, 3, b"b", b"y"), (1, 9, b"c", b"z"), (1, 7, b"d", b"w")]),
    ("DELETE FROM nodes WHERE key = ?", [(1,), (3,)]),
]


@pytest.mark.parametrize("bound", [db.MAX_BOUND, 6, 2])
@pytest.mark.parametrize(("sql", "rows"), CASES)
def test_same_result_as_executemany(
    sql: str, rows: list[tuple[Any, ...]], bound: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "MAX_BOUND", bound)
    ours, theirs = _tables(), _tables()
    for conn in (ours, theirs):
        conn.executemany(statements.INSERT_NODE, [(k, b"old") for k in range(0, 10, 2)])
    db.execute_rows(ours, sql, rows)
    theirs.executemany(sql, rows)
    for table in ("nodes", "signatures"):
        got = ours.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
        assert got == theirs.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
    assert ours.execute("SELECT count(*) FROM nodes").fetchone()[0] > 0


def test_many_rows_take_few_statements() -> None:
    steps = []

    class Counting:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def execute(self, sql: str, params: list[Any]) -> None:
            steps.append(sql)
            self.conn.execute(sql, params)

        def executemany(self, sql: str, rows: list[Any]) -> None:
            steps.extend([sql] * len(rows))
            self.conn.executemany(sql, rows)

    conn = _tables()
    rows = [(k, bytes(32)) for k in range(40_000)]
    db.execute_rows(Counting(conn), statements.INSERT_NODE, rows)  # type: ignore[arg-type]
    assert len(steps) == -(-40_000 // (db.MAX_BOUND // 2))  # 3
    assert conn.execute("SELECT count(*) FROM nodes").fetchone()[0] == 40_000
    steps.clear()
    db.execute_rows(Counting(conn), "UPDATE nodes SET hash = ? WHERE key = ?", [(b"x", 1), (b"y", 2)])  # type: ignore[arg-type]
    assert len(steps) == 2  # not an insert of values: row by row
