"""The backup peer end to end: blind replication, receipts, quota."""

from __future__ import annotations

import json

from tests.integration.daemons import cli, ok, poll

MARKER = "plaintext-marker-7f3a9c"


def files_contain(home, needle: bytes) -> list[str]:
    hits = []
    for path in home.rglob("*"):
        if path.is_file() and needle in path.read_bytes():
            hits.append(path.name)
    return hits


async def backup_status(home) -> list[dict]:
    return json.loads(await ok(home, "backup", "status", "g", "--json"))


async def test_seed_serves_a_newcomer_and_cannot_read(daemons, tmp_path):
    a, s = await daemons("a"), await daemons("s")
    uri = (await ok(a.home, "group", "create", "g")).strip()
    for k in range(5):
        await ok(a.home, "log", "append", "g", f"{MARKER} entry {k}")
    seed_uri = (await ok(a.home, "group", "invite", "g", "--seed")).strip()
    assert seed_uri.startswith("cobox://seed/")
    rc, _, err = await cli(s.home, "seed", uri)
    assert rc == 1 and "not a backup-peer invite" in err
    assert "backing up" in await ok(s.home, "seed", seed_uri)
    assert await backup_status(a.home) == []
    await ok(s.home, "peers", "add", await a.address())
    await ok(s.home, "sync", "wait", (json.loads(await ok(s.home, "seed", "list", "--json")))[0]["name"],
             "--timeout", "20")
    # Receipts: A learns that S holds all 6 entries of its feed (A's profile, cobox.devices, and 5 log entries).
    async def backed_up() -> bool:
        st = await backup_status(a.home)
        return bool(st) and st[0]["backed_up"] and st[0]["feeds"][0]["held"] == 6

    await poll(backed_up)
    assert await backed_up()
    # Backed up means audited: S answered for every one of the 6 entries (fewer than 90).
    audit = (await backup_status(a.home))[0]["feeds"][0]["audit"]
    assert audit["state"] == "verified" and audit["samples"] == 6 and audit["claimed"] == 6
    assert "claimed 6/6, verified by audit at" in await ok(a.home, "backup", "status", "g")
    assert "backed up, audit passed at" in await ok(a.home, "status")
    # The seed can neither read nor write.
    name = json.loads(await ok(s.home, "seed", "list", "--json"))[0]["name"]
    rc, _, err = await cli(s.home, "log", "cat", name)
    assert rc == 1 and "cannot read" in err
    rc, _, err = await cli(s.home, "group", "invite", name)
    assert rc == 1 and "seed invite" in err
    # A goes away; B joins for the first time and gets everything from S alone.
    await ok(a.home, "log", "append", "g", "after the seed synced")
    await ok(s.home, "sync", "wait", name, "--timeout", "20")

    async def all_six() -> bool:  # `sync wait` cannot wait for an entry S has not heard of yet
        return json.loads(await ok(s.home, "seed", "list", "--json"))[0]["feeds"][0]["length"] == 1 + 6

    assert await poll(all_six, 30), "the seed never held the sixth entry"
    await a.stop()
    b = await daemons("b")
    await ok(b.home, "group", "join", uri)
    await ok(b.home, "peers", "add", await s.address())
    await ok(b.home, "sync", "wait", "g", "--timeout", "20")
    texts = [json.loads(x)["text"] for x in (await ok(b.home, "log", "cat", "g", "--json")).splitlines()]
    assert texts == [f"{MARKER} entry {k}" for k in range(5)] + ["after the seed synced"]
    await s.stop()
    assert files_contain(s.home, MARKER.encode()) == []
    assert files_contain(b.home, MARKER.encode()) == []  # stored encrypted on members too
    assert "seed-" in name


async def test_quota_stops_the_seed_and_deletes_nothing(daemons):
    a = await daemons("a")
    s = await daemons("s", config=["[backup]", "quota_mb = 0.01"])  # ~10 KiB
    await ok(a.home, "group", "create", "g")
    seed_uri = (await ok(a.home, "group", "invite", "g", "--seed")).strip()
    await ok(s.home, "seed", seed_uri)
    await ok(s.home, "peers", "add", await a.address())
    name = json.loads(await ok(s.home, "seed", "list", "--json"))[0]["name"]
    for k in range(8):  # one entry at a time, each fetched by its own request
        await ok(a.home, "log", "append", "g", f"{k}: " + "x" * 3000)
        await cli(s.home, "sync", "wait", name, "--timeout", "2")
    seeds: list[dict] = []

    async def full() -> bool:
        seeds[:] = json.loads(await ok(s.home, "seed", "list", "--json"))
        return seeds[0]["quota_full"]

    await poll(full)
    assert await full()
    held = seeds[0]["stored_bytes"]
    assert 10 * 1024 <= held < 8 * 3000
    # Writes continue locally; the seed takes nothing more, and A is told.
    await ok(a.home, "log", "append", "g", "more")
    st = await backup_status(a.home)
    assert st and not st[0]["backed_up"]
    async def told_full() -> bool:
        st[:] = await backup_status(a.home)
        return st[0]["quota_full"]

    await poll(told_full)
    assert st[0]["quota_full"]
    assert json.loads(await ok(s.home, "seed", "list", "--json"))[0]["stored_bytes"] == held
    assert "REACHED" in await ok(s.home, "seed", "list")


async def test_keys_backup_and_restore_on_a_fresh_home(daemons):
    a, s = await daemons("a"), await daemons("s")
    uri = (await ok(a.home, "group", "create", "g")).strip()
    await ok(a.home, "log", "append", "g", "before the loss")
    peer_s = await s.address()
    password = b"correct horse battery staple\n"
    # S shares no group with A yet: a stranger's registration is refused.
    rc, _, err = await cli(a.home, "keys", "backup", "--peer", peer_s, "--user", "alice", "--password-stdin",
                           stdin=password)
    assert rc == 1 and "shares a group" in err
    await ok(s.home, "seed", (await ok(a.home, "group", "invite", "g", "--seed")).strip())  # S: A's backup peer
    # An address without ~noise:KEY is refused: whoever answers there would get the keyring.
    bare = peer_s.split(";")[0].split("~")[0]
    rc, _, err = await cli(a.home, "keys", "backup", "--peer", bare, "--user", "alice", "--password-stdin",
                           stdin=password)
    assert rc == 1 and "~noise:KEY" in err and "--trust-first-use" in err
    out = await ok(a.home, "keys", "backup", "--peer", bare, "--trust-first-use", "--user", "alice",
                   "--password-stdin", stdin=password)
    s_key = peer_s.split(";")[0].split("~noise:")[1]
    assert "trusted on first use" in out and s_key in out  # the key it got, printed
    await ok(a.home, "keys", "backup", "--peer", peer_s, "--user", "alice", "--password-stdin", stdin=password)
    a_id = (await a.status())["peer_id"]
    # Without a password source, it refuses instead of reading argv or hanging.
    rc, _, err = await cli(a.home, "keys", "backup", "--peer", peer_s, "--user", "alice")
    assert rc == 1 and "--password-stdin" in err

    fresh = await daemons("fresh")
    assert (await fresh.status())["peer_id"] != a_id
    rc, _, wrong = await cli(fresh.home, "keys", "restore", "--peer", peer_s, "--user", "alice",
                             "--password-stdin", stdin=b"not the password\n")
    assert rc == 1 and "password" in wrong.lower()
    rc, _, unknown = await cli(fresh.home, "keys", "restore", "--peer", peer_s, "--user", "nobody",
                               "--password-stdin", stdin=b"not the password\n")
    assert rc == 1 and unknown == wrong.replace("alice", "nobody")
    out = await ok(fresh.home, "keys", "restore", "--peer", peer_s, "--user", "alice", "--password-stdin",
                   stdin=password)
    assert a_id[:16] in out
    # The daemon restarts under the recovered identity and rejoins the group.
    answers: list[str] = []

    async def restarted() -> bool:
        rc, out, _ = await cli(fresh.home, "status", "--json")
        answers[:] = [out]
        return rc == 0 and json.loads(out)["peer_id"] == a_id

    await poll(restarted)
    status = json.loads(answers[0])
    assert status["peer_id"] == a_id and [g["name"] for g in status["groups"]] == ["g"]
    assert (await ok(fresh.home, "group", "invite", "g")).strip().split("?")[0] == uri.split("?")[0]
