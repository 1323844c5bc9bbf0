"""Backup as a service end to end: a host's service invite, a member's `backup add`, blind
seeding, a newcomer served by the host alone, quota, revoke, and every bad invite."""

from __future__ import annotations

import json

import pytest

from networker import decode_key
from tests.integration.daemons import cli, ok, poll
from tests.integration.test_backup import MARKER, files_contain

WAIT = 120.0  # seconds a poll of CLI commands goes on (well over the waits needed, on 2 shared cores)


async def seeds(home) -> list[dict]:
    return json.loads(await ok(home, "seed", "list", "--json"))


async def backups(home) -> list[dict]:
    return json.loads(await ok(home, "backup", "list", "--json"))


async def invites(home) -> list[dict]:
    return json.loads(await ok(home, "service", "list", "--json"))


async def until(check, what: str) -> None:
    if not await poll(check, WAIT):
        raise AssertionError(f"never: {what}")


@pytest.mark.timeout(300)  # a few dozen CLI processes on 2 shared cores
async def test_a_host_keeps_a_group_by_invite_serves_a_newcomer_and_cannot_read(daemons):
    h, a = await daemons("h"), await daemons("a")
    uri = (await ok(a.home, "group", "create", "g")).strip()
    for k in range(5):
        await ok(a.home, "log", "append", "g", f"{MARKER} entry {k}")
    invite = (await ok(h.home, "service", "invite", "--label", "family", "--groups", "2")).strip()
    assert invite.startswith("cobox://backup/") and "cap=" in invite and "peer=" in invite
    out = await ok(a.home, "backup", "add", "g", stdin=invite.encode())
    assert "backed up on host" in out and "replication key only" in out
    # The host keeps it as a seed: `seed list` shows it, and it syncs.
    [kept] = await seeds(h.home)
    assert kept["name"].startswith("hosted-") and kept["role"] == "seed"
    await ok(h.home, "sync", "wait", kept["name"], "--timeout", "20")
    [inv] = await invites(h.home)
    a_id = (await a.status())["peer_id"]
    assert inv["label"] == "family" and inv["devices"] == [a_id] and inv["max_groups"] == 2
    assert inv["groups"][0]["name"] == kept["name"] and inv["groups"][0]["state"] == "active"
    assert "family" in await ok(h.home, "service", "list")
    # The member sees the host's signed statement, then its receipts.
    [b] = await backups(a.home)
    assert b["host"] == (await h.status())["peer_id"] and b["state"] == "active" and b["connected"]

    async def receipted() -> bool:
        [b] = await backups(a.home)
        return b["receipts"] is not None and b["receipts"]["feeds"][0]["held"] == 1 + 5  # profile + 5 entries

    await until(receipted, "receipts from the host")
    assert "host" in await ok(a.home, "backup", "list")
    # The same group again: one line, nothing changes.
    rc, _, err = await cli(a.home, "backup", "add", "g", stdin=invite.encode())
    assert rc == 1 and "already" in err and len(err.strip().splitlines()) == 1
    # The member goes away; a newcomer joins by the group invite and gets everything from the host.
    await ok(a.home, "log", "append", "g", "after the host synced")
    await ok(h.home, "sync", "wait", kept["name"], "--timeout", "20")

    async def all_six() -> bool:
        return (await seeds(h.home))[0]["feeds"][0]["length"] == 1 + 6  # the profile and 6 entries

    await until(all_six, "the host holds the sixth entry")
    await a.stop()
    n = await daemons("n")
    await ok(n.home, "group", "join", uri)
    await ok(n.home, "peers", "add", await h.address())
    await ok(n.home, "sync", "wait", "g", "--timeout", "20")
    texts = [json.loads(x)["text"] for x in (await ok(n.home, "log", "cat", "g", "--json")).splitlines()]
    assert texts == [f"{MARKER} entry {k}" for k in range(5)] + ["after the host synced"]
    # The host never held the address or the plaintext.
    await h.stop()
    address = decode_key(uri.split("cobox://join/")[1].split("?")[0])
    assert files_contain(h.home, MARKER.encode()) == []
    assert files_contain(h.home, address) == []
    assert files_contain(h.home, uri.split("cobox://join/")[1].split("?")[0].encode()) == []


@pytest.mark.timeout(300)  # a few dozen CLI processes on 2 shared cores
async def test_quota_pauses_the_group_tells_the_member_and_deletes_nothing(daemons):
    h, a = await daemons("h"), await daemons("a")
    await ok(a.home, "group", "create", "g")
    await ok(a.home, "group", "create", "other")
    small = (await ok(h.home, "service", "invite", "--quota-mb", "0.01")).strip()  # ~10 KiB
    await ok(a.home, "backup", "add", "g", small)
    [kept] = await seeds(h.home)
    for k in range(5):
        await ok(a.home, "log", "append", "g", f"{k}: " + "x" * 3000)
        await cli(h.home, "sync", "wait", kept["name"], "--timeout", "2")

    async def paused() -> bool:
        return (await seeds(h.home))[0]["quota_full"]

    await until(paused, "the host pauses at the invite's quota")
    held = (await seeds(h.home))[0]["stored_bytes"]
    assert 10 * 1024 <= held < 5 * 3000

    async def told() -> bool:
        [b] = await backups(a.home)
        return b["state"] == "quota reached" and b["receipts"] is not None and b["receipts"]["quota_full"]

    await until(told, "the member is told the quota is reached")
    await ok(a.home, "log", "append", "g", "more")
    assert (await seeds(h.home))[0]["stored_bytes"] == held  # nothing more taken, nothing deleted
    assert "quota reached" in await ok(a.home, "backup", "list")
    assert len((await ok(a.home, "log", "cat", "g")).splitlines()) == 6
    # No other group can be added under the used-up invite.
    rc, _, err = await cli(a.home, "backup", "add", "other", small)
    assert rc == 1 and "quota" in err and "used up" in err


@pytest.mark.timeout(300)  # a few dozen CLI processes on 2 shared cores
async def test_revoke_stops_new_data_says_so_and_clears_after_the_grace(daemons):
    h = await daemons("h", config=["[hosting]", "revoke_grace_days = 0.0002"])  # ~17 s: the member asks within it
    a = await daemons("a")
    await ok(a.home, "group", "create", "other")
    invite = (await ok(h.home, "service", "invite")).strip()
    await ok(a.home, "backup", "add", "other", invite)
    await ok(a.home, "log", "append", "other", "before the revoke")
    [other] = await seeds(h.home)
    await ok(h.home, "sync", "wait", other["name"], "--timeout", "20")
    [inv] = await invites(h.home)
    out = await ok(h.home, "service", "revoke", inv["id"][:8])
    assert "revoked invite" in out and "take no new data" in out
    before = (await seeds(h.home))[0]["stored_bytes"]
    assert before > 0
    await ok(a.home, "log", "append", "other", "after the revoke " + "y" * 2000)

    async def revoked_told() -> bool:
        [b] = await backups(a.home)
        return b["state"] == "revoked" and b["receipts"] is not None and b["receipts"]["quota_full"]

    await until(revoked_told, "the member learns of the revoke (statement and receipts)")
    async def cleared() -> bool:
        now = await seeds(h.home)
        assert not now or now[0]["stored_bytes"] == before  # no new data until it is cleared
        return not now

    await poll(cleared, WAIT)
    assert await seeds(h.home) == []
    assert (await invites(h.home))[0]["revoked"]
    # The member's data is all still there; the revoked invite adds nothing again.
    assert "after the revoke" in await ok(a.home, "log", "cat", "other")
    rc, _, err = await cli(a.home, "backup", "add", "other", invite)
    assert rc == 1 and "revoked" in err and len(err.strip().splitlines()) == 1


@pytest.mark.timeout(300)  # a few dozen CLI processes on 2 shared cores
async def test_bad_invites_fail_in_one_line_and_lose_nothing(daemons):
    h, a, x = await daemons("h"), await daemons("a"), await daemons("x")
    uri = (await ok(a.home, "group", "create", "g")).strip()
    await ok(a.home, "log", "append", "g", "kept through every refusal")
    good = (await ok(h.home, "service", "invite")).strip()
    host_key, query = good.split("cobox://backup/")[1].split("?")

    async def refused(invite: str, *needles: str) -> None:
        rc, out, err = await cli(a.home, "backup", "add", "g", stdin=invite.encode())
        assert rc == 1, out
        assert len(err.strip().splitlines()) == 1, err
        for needle in needles:
            assert needle in err, err

    # A wrong capability (another invite's, of another host): the same words as an unknown invite.
    other_cap = (await ok(x.home, "service", "invite")).strip().split("cap=")[1].split("&")[0]
    cap = query.split("cap=")[1].split("&")[0]
    await refused(good.replace(cap, other_cap), "no such invite", "cobox service invite")
    # Expired (it expired before it could be used), and revoked.
    expired = (await ok(h.home, "service", "invite", "--expires", "0.000000001")).strip()
    await refused(expired, "expired", "new invite")
    revoked = (await ok(h.home, "service", "invite", "--label", "to revoke")).strip()
    rid = next(i["id"] for i in await invites(h.home) if i["label"] == "to revoke")
    await ok(h.home, "service", "revoke", rid)
    await refused(revoked, "revoked", "new invite")
    # Another key answers at the invite's address: nothing is sent.
    x_key = (await x.status())["peer_key"]
    await refused(good.replace(host_key, x_key).replace(f"~noise:{host_key}", f"~noise:{x_key}"),
                  "another key", "new invite")
    # A truncated or cut invite, and a group invite in place of a service invite.
    await refused(good.split("&")[0][:-3], "capability")
    await refused(uri, "group invite", "cobox service invite")
    rc, _, err = await cli(h.home, "group", "join", good)
    assert rc == 1 and "backup add" in err
    # A group the host keeps already (it seeds it by hand).
    await ok(h.home, "seed", (await ok(a.home, "group", "invite", "g", "--seed")).strip())
    await refused(good, "keeps that group already")
    # Nothing was lost on either side; no invite was used up.
    assert "kept through every refusal" in await ok(a.home, "log", "cat", "g")
    assert await backups(a.home) == []
    assert all(not i["groups"] for i in await invites(h.home))
    assert len(await seeds(h.home)) == 1


async def test_host_and_member_remember_after_a_restart(daemons):
    h, a = await daemons("h"), await daemons("a")
    await ok(a.home, "group", "create", "g")
    await ok(a.home, "backup", "add", "g", (await ok(h.home, "service", "invite")).strip())
    [kept] = await seeds(h.home)
    # The member restarts: it dials the host again by the invite's address, and new data reaches it.
    await a.stop()
    await a.start()
    await ok(a.home, "log", "append", "g", "after the member's restart")

    async def reached() -> bool:
        s = await seeds(h.home)
        return bool(s[0]["feeds"]) and s[0]["feeds"][0]["length"] == 1 + 1  # the profile, the new entry

    await until(reached, "the host gets the member's new entry after its restart")
    [b] = await backups(a.home)
    assert b["connected"] and b["state"] == "active"
    # The host restarts: it still keeps the group for the invite.
    await h.stop()
    await h.start()
    assert [s["name"] for s in await seeds(h.home)] == [kept["name"]]
    [inv] = await invites(h.home)
    assert inv["groups"][0]["name"] == kept["name"] and inv["groups"][0]["stored_bytes"] > 0
