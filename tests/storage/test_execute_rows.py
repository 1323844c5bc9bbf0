"""``db.execute_rows``: an insert of many rows as a few statements does exactly what
``executemany`` of the same rows does (duplicates, upserts, order, more rows than one
statement holds, a connection with SQLite's old limit of 999 bound parameters), and any other
statement, or rows of the wrong width, are left to ``executemany``."""

import sqlite3
from pathlib import Path
from typing import Any

import pytest

import storage
from storage import db, statements


def _schema() -> sqlite3.Connection:
    """An in-memory database with the store's own schema (every migration, in order)."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for path in sorted((Path(storage.__file__).parent / "sql").glob("*.sql")):
        conn.executescript(path.read_text())
    return conn


def _tables(conn: sqlite3.Connection) -> dict[str, list[Any]]:
    names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {n: conn.execute(f'SELECT * FROM "{n}" ORDER BY 1, 2').fetchall() for n in names}


FORK = (1, 5, b"ta", b"sa", 5, b"tb", b"sb", 3, b"ha", b"hb", 7)
CASES = [
    (statements.INSERT_NODE, [(k % 7, bytes([k])) for k in range(20)]),  # duplicates: the first stays
    ("INSERT OR REPLACE INTO nodes (key, hash) VALUES (?, ?)", [(k % 5, bytes([k])) for k in range(12)]),  # the last
    (statements.UPSERT_SIGNATURE, [(1, 5, b"a", b"x"), (2, 3, b"b", b"y"), (1, 9, b"c", b"z"), (1, 7, b"d", b"w")]),
    (statements.UPSERT_RECORD, [("s", "k", b"1"), ("s", "j", b"2"), ("s", "k", b"3")]),
    (statements.SET_META, [("a", 1), ("blob_end", 5), ("a", 2)]),
    (statements.INSERT_FORK, [FORK, (*FORK[:1], 6, *FORK[2:])]),
    (statements.INSERT_CLEARED, [(1, k, k + 1) for k in range(0, 40, 2)]),
    (statements.INSERT_OUTSIDE, [(k, 10 + k) for k in range(9)]),  # literal NULLs: executemany
    ("DELETE FROM nodes WHERE key = ?", [(1,), (3,)]),
]


@pytest.mark.parametrize(("rows_at_most", "params_limit"), [(db.MAX_ROWS, None), (4, None), (1, None), (512, 999)])
@pytest.mark.parametrize(("sql", "rows"), CASES)
def test_same_result_as_executemany(
    sql: str, rows: list[tuple[Any, ...]], rows_at_most: int, params_limit: int | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(db, "MAX_ROWS", rows_at_most)
    ours, theirs = _schema(), _schema()
    if params_limit is not None:
        ours.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, params_limit)
    for conn in (ours, theirs):
        conn.executemany(statements.INSERT_NODE, [(k, b"old") for k in range(0, 10, 2)])
    db.execute_rows(ours, sql, rows)
    theirs.executemany(sql, rows)
    assert _tables(ours) == _tables(theirs)


class Counting:
    """A connection that counts the statements run (one step each, or one per row)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn, self.steps = conn, 0

    def execute(self, sql: str, params: list[Any]) -> None:
        self.steps += 1
        self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: list[Any]) -> None:
        self.steps += len(rows)
        self.conn.executemany(sql, rows)

    def getlimit(self, category: int) -> int:
        return self.conn.getlimit(category)


def test_many_rows_take_few_statements_within_the_parameter_limit() -> None:
    conn = _schema()
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    counting = Counting(conn)
    db.execute_rows(counting, statements.INSERT_NODE, [(k, bytes(32)) for k in range(10_000)])  # type: ignore[arg-type]
    # 999 // 2 = 499 rows at most: 256 a statement, 10,000 = 39 * 256 + 16
    assert counting.steps == 40
    assert conn.execute("SELECT count(*) FROM nodes").fetchone()[0] == 10_000
    counting.steps = 0
    db.execute_rows(counting, statements.INSERT_NODE, [(k, bytes(32)) for k in range(10_000, 10_013)])  # type: ignore[arg-type]
    assert counting.steps == 3  # 8 + 4 + 1: a few texts, compiled once each


def test_other_statements_and_odd_rows_run_row_by_row() -> None:
    conn = _schema()
    counting = Counting(conn)
    db.execute_rows(counting, "UPDATE nodes SET hash = ? WHERE key = ?", [(b"x", 1), (b"y", 2)])  # type: ignore[arg-type]
    assert counting.steps == 2
    with pytest.raises(sqlite3.ProgrammingError):  # refused as executemany refuses it, not flattened
        db.execute_rows(conn, statements.INSERT_NODE, [(1, b"x", 2), (b"y",)])
    assert conn.execute("SELECT count(*) FROM nodes").fetchone()[0] == 0


def test_a_row_that_fails_fails_the_transaction_and_a_rollback_leaves_nothing() -> None:
    # The writer's transactions: a failing row (here a duplicate key, past the first full
    # statement of 512 rows, which already ran) raises; the caller's rollback removes every
    # row of the transaction, those of statements that succeeded included, as with executemany.
    for run in (db.execute_rows, lambda c, s, r: c.executemany(s, r)):
        conn = _schema()
        conn.execute("INSERT INTO nodes (key, hash) VALUES (?, ?)", (-1, b"kept"))
        rows = [(k, bytes([k % 256])) for k in range(700)] + [(600, b"again")] + [(k, b"") for k in range(700, 900)]
        conn.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.IntegrityError):
            run(conn, "INSERT INTO nodes (key, hash) VALUES (?, ?)", rows)
        conn.rollback()
        assert conn.execute("SELECT key, hash FROM nodes").fetchall() == [(-1, b"kept")]
        run(conn, "INSERT INTO nodes (key, hash) VALUES (?, ?)", rows[:10])  # the connection goes on
        assert conn.execute("SELECT count(*) FROM nodes").fetchone() == (11,)
