"""storage.rows owns the SQL and the key layout: the module graph of storage/ is one-way, feed.py,
store.py and forks.py hold no SQL and no key arithmetic, and the on-disk keys are feed<<42|seq."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import storage
from storage import rows

from .conftest import OpenStore

PACKAGE = Path(storage.__file__).parent
SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|PRAGMA)\b")


def _storage_imports(path: Path) -> set[str]:
    """The storage modules ``path`` imports anywhere (top level, TYPE_CHECKING, in functions)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                out.add(node.module.split(".")[0])
            elif node.level == 1:
                out.update(a.name for a in node.names)
            elif node.module and node.module.startswith("storage."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("storage."))
    return out


def _graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {m: _storage_imports(PACKAGE / f"{m}.py") & modules for m in modules}


def test_storage_modules_import_one_way() -> None:
    graph = _graph()
    assert "store" not in graph["feed"] and "feed" not in graph["forks"] and "store" not in graph["rows"]
    # Depth-first search for a cycle; report the first one found.
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for dep in sorted(graph[m]):
            assert state.get(dep) != 1, f"import circle: {' -> '.join([*path, m, dep])}"
            if dep not in state:
                visit(dep, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_modules_are_small() -> None:
    for p in PACKAGE.glob("*.py"):
        assert len(p.read_text().splitlines()) < 500, p.name


def test_no_sql_and_no_key_arithmetic_outside_rows() -> None:
    for name in ("feed", "store", "forks", "compaction", "outside", "clearing"):
        module = ast.parse((PACKAGE / f"{name}.py").read_text())
        for node in ast.walk(module):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                # Docstrings may name a statement in prose; SQL text is upper case in this code base.
                assert not SQL.search(node.value), f"{name}.py holds SQL: {node.value[:60]!r}"
            assert not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.LShift | ast.RShift)), name
            assert not (isinstance(node, ast.Name) and node.id in ("KEY_SHIFT", "SEQ_MASK")), name


async def test_keys_on_disk_are_feed_shifted_by_42_or_seq(open_store: OpenStore) -> None:
    store = await open_store("s")
    first, second = await store.create_feed(), await store.create_feed()
    await first.append([b"a", b"b"])
    await second.append([b"c", b"d", b"e"])
    assert rows.row_key(second.id, 2) == (second.id << 42) | 2
    keys = [k for (k,) in await store.read("SELECT key FROM entries ORDER BY key")]
    assert keys == [(first.id << 42) | 0, (first.id << 42) | 1, *[(second.id << 42) | k for k in range(3)]]
    # Node rows use the same layout (the depth-2 root of 3+ entries is not recomputed, so stored).
    await second.append([b"f"])
    node_keys = [k for (k,) in await store.read("SELECT key FROM nodes")]
    assert node_keys and all(k >> 42 == second.id for k in node_keys)
    assert await store.rows.nodes(second.id, [3]) == await second.node_hashes([3])
    assert await store.rows.entries(second.id, 1, 3) == ([b"d", b"e"], True)
    assert await store.rows.entries(second.id, 3, 9) == ([b"f"], False)
    assert await store.rows.entry_sizes(second.id, 0, 9) == [1, 1, 1, 1]
    assert await store.rows.entry(first.id, 2) is None


async def test_records_read_through_the_store(open_store: OpenStore) -> None:
    store = await open_store("s")
    await store.put_record("scope", "k1", b"abc")
    await store.put_record("scope", "k2", b"de")
    await store.put_record("other", "k1", b"zzzzz")
    assert await store.record("scope", "k1") == b"abc"
    assert await store.record("scope", "missing") is None
    assert await store.records_size("scope") == 5
    assert await store.records_size("none") == 0
    await store.delete_record("scope", "k1")
    assert await store.records("scope") == {"k2": b"de"}


async def test_many_node_reads_are_split_below_the_parameter_limit(open_store: OpenStore) -> None:
    store = await open_store("s")
    feed = await store.create_feed()
    await feed.append([bytes([k % 256]) for k in range(4 * rows.MAX_READ_PARAMS)])
    stored = {k & rows.SEQ_MASK for (k,) in await store.read("SELECT key FROM nodes")}
    assert len(stored) > rows.MAX_READ_PARAMS
    got = await store.rows.nodes(feed.id, sorted(stored))
    assert set(got) == stored


async def test_record_scope_is_a_typed_handle(open_store: OpenStore) -> None:
    store = await open_store("s")
    groups, other = store.scope("groups"), store.scope("other")
    await groups.put("a", b"1")
    await groups.put("b", b"22")
    await other.put("a", b"x")
    await groups.put("a", b"333")  # replaces
    assert await groups.all() == {"a": b"333", "b": b"22"} and await groups.size() == 5
    assert await groups.get("a") == b"333" and await groups.get("c") is None
    await groups.delete("a")
    assert await groups.all() == {"b": b"22"} and await other.all() == {"a": b"x"}
    assert await store.records("groups") == {"b": b"22"}  # the same rows as the string API
    with pytest.raises(ValueError):
        store.scope("")


async def test_nodes_between_reads_the_others_in_the_same_query(open_store: OpenStore) -> None:
    store = await open_store("s")
    feed = await store.create_feed()
    await feed.append([bytes([k]) * 9000 for k in range(8)])  # large entries: every node is stored
    every = await store.rows.nodes(feed.id, range(15))
    assert len(every) == 15
    queries: list[str] = []
    real = store.rows.read

    async def counting(query: str, params: object = ()) -> list[object]:
        queries.append(query)
        return await real(query, params)  # type: ignore[arg-type]

    store.rows.read = counting  # type: ignore[method-assign]
    got = await store.rows.nodes_between(feed.id, 4, 6, [1, 11, 13, 99])
    assert got == {i: every[i] for i in (4, 5, 6, 1, 11, 13)}
    assert len(queries) == 1
    assert await store.rows.nodes_between(feed.id, 8, 10) == {i: every[i] for i in (8, 9, 10)}
    # More keys than one statement takes: still every node, in more than one read.
    queries.clear()
    many = [16 + k for k in range(rows.MAX_READ_PARAMS)]
    assert await store.rows.nodes_between(feed.id, 0, 2, [*many, 7]) == {i: every[i] for i in (0, 1, 2, 7)}
    assert len(queries) > 1
