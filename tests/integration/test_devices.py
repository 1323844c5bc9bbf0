"""Device names end to end (issue 17 items 1 and 2): three daemons, two members and a backup
peer; every device's name appears in `cobox device list` on all three, and a rename reaches
the others."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from tests.integration.daemons import ok


def named(name: str) -> list[str]:
    return ["[device]", f'name = "{name}"']


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


async def test_names_appear_in_device_list_on_all_three(daemons):
    a = await daemons("a", config=named("alice-laptop"))
    b = await daemons("b", config=named("bob-desk"))
    s = await daemons("s", config=named("nas"))
    invite = (await ok(a.home, "group", "create", "g")).strip()
    await ok(b.home, "group", "join", stdin=invite.encode())
    await ok(s.home, "seed", (await ok(a.home, "group", "invite", "g", "--seed")).strip())
    seed_name = json.loads(await ok(s.home, "seed", "list", "--json"))[0]["name"]
    for x, y in ((b, a), (s, a), (s, b)):
        await ok(x.home, "peers", "add", await y.address())
    ids = {d: (await d.status())["peer_id"] for d in (a, b, s)}
    want = {ids[a]: ("alice-laptop", "member"), ids[b]: ("bob-desk", "member"), ids[s]: ("nas", "backup peer")}
    seen: dict[str, list[dict]] = {}

    async def listed(d, group: str, expected: dict[str, tuple[str, str]]) -> bool:
        seen[group] = rows = json.loads(await ok(d.home, "device", "list", group, "--json"))
        return {r["id"]: (r["name"], r["role"]) for r in rows} == expected

    for d, group in ((a, "g"), (b, "g")):
        await eventually(lambda d=d, group=group: listed(d, group, want), 30, f"the names on {d.home.name}")
    rows = {r["id"]: r for r in seen["g"]}
    assert rows[ids[b]]["this_device"] and rows[ids[a]]["connected"] and rows[ids[a]]["connection"]
    assert rows[ids[s]]["connected"]
    # a backup peer reads no feed: it knows the members from their profiles on the channel
    await eventually(lambda: listed(s, seed_name, want), 30, "the names on the backup peer")
    text = await ok(a.home, "device", "list", "g")
    assert "alice-laptop (this device)" in text and "bob-desk" in text and "nas" in text

    out = await ok(b.home, "device", "rename", "bob-laptop")
    assert "bob-laptop" in out
    want[ids[b]] = ("bob-laptop", "member")
    await eventually(lambda: listed(a, "g", want), 30, "the new name on a")
    await eventually(lambda: listed(s, seed_name, want), 30, "the new name on the backup peer")
    # names stand where ids stood: peers in status, the log's authors
    assert {p["name"] for p in (await a.status())["peers"]} == {"bob-laptop", "nas"}
    await ok(b.home, "log", "append", "g", "hello from b")

    async def logged() -> bool:
        return "bob-laptop  hello from b" in await ok(a.home, "log", "cat", "g")

    await eventually(logged, 30, "b's entry under its name on a")

    async def b_holds_both_feeds() -> bool:
        rows = {r["id"]: r for r in json.loads(await ok(a.home, "device", "list", "g", "--json"))}
        feeds = rows[ids[b]]["feeds"]  # what b says it holds, feed by feed
        return len(feeds) == 2 and all(f["held"] == f["length"] > 0 for f in feeds)

    await eventually(b_holds_both_feeds, 30, "b to hold both members' feeds, as a sees it")
    # names survive a restart, and the log shows no refused entry (profiles are not log entries)
    await a.stop()
    await a.start()
    await eventually(lambda: listed(a, "g", want), 30, "the names after a restart")
    entries = [json.loads(line) for line in (await ok(a.home, "log", "cat", "g", "--json")).splitlines()]
    assert [e for e in entries if "refused" in e] == []
