"""One copy on members, end to end (issue 16 item 2): a member daemon releases the chunk entries
its folder's files hold (its store ends well under 10 % of the folder), ``folder status`` says
where the bytes are, and a member that joins afterwards gets every file, served from entries
rebuilt from A's files and verified against A's signed tree."""

from __future__ import annotations

import json
import os

from blake3 import blake3

from tests.integration.daemons import ok, poll
from tests.integration.test_leave import store_bytes

SIZE = 8 * 1024 * 1024


async def test_a_member_keeps_one_copy_and_a_new_member_gets_every_file(daemons, tmp_path):
    a = await daemons("a")
    fa, fb = tmp_path / "fa", tmp_path / "fb"
    fa.mkdir()
    fb.mkdir()
    files = {"big.bin": os.urandom(SIZE), "small.txt": os.urandom(5000)}
    for name, data in files.items():
        (fa / name).write_bytes(data)
    uri = (await ok(a.home, "group", "create", "g")).strip()
    await ok(a.home, "folder", "add", "g", str(fa))

    async def released() -> bool:
        disk = json.loads(await ok(a.home, "folder", "status", "g", "--json"))["disk"]
        return disk.get("outside_bytes", 0) >= SIZE and disk["stored_bytes"] < SIZE // 10

    assert await poll(released, timeout=90), "timed out waiting for a to release the chunk entries its files hold"
    assert store_bytes(a.home) < 0.1 * (SIZE + 5000) + 4 * 1024 * 1024  # the database's few MB floor
    assert "more in your files" in await ok(a.home, "folder", "status", "g")
    b = await daemons("b")
    await ok(b.home, "group", "join", uri)
    await ok(b.home, "folder", "add", "g", str(fb))
    await ok(b.home, "peers", "add", await a.address())

    async def got_all() -> bool:
        return all((fb / n).exists() and (fb / n).stat().st_size == len(d) for n, d in files.items())

    assert await poll(got_all, timeout=90), "timed out waiting for b to get every file"
    for name, data in files.items():
        assert blake3((fb / name).read_bytes()).digest() == blake3(data).digest()
