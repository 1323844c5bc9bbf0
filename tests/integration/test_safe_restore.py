"""Safe restore end to end (issue 17 item 5): a restore refuses to replace an identity in use
without --force and keeps the old key; it returns only once the restarted daemon answers; the
keyring's folder bindings come back (with --yes); a backup that no longer covers the groups is
said to be stale after a join, and is current again after a new backup."""

from __future__ import annotations

import json
import stat

from tests.integration.daemons import cli, ok

PASSWORD = b"correct horse battery staple\n"


async def test_restore_is_safe_and_returns_when_the_daemon_answers(daemons, tmp_path):
    a, s = await daemons("a"), await daemons("s")
    await ok(a.home, "group", "create", "g")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.txt").write_bytes(b"meow")
    await ok(a.home, "folder", "add", "g", str(photos))
    await ok(s.home, "seed", (await ok(a.home, "group", "invite", "g", "--seed")).strip())
    peer_s = await s.address()
    await ok(a.home, "keys", "backup", "--peer", peer_s, "--user", "alice", "--password-stdin", stdin=PASSWORD)
    state = json.loads(await ok(a.home, "status", "--json"))
    a_id = state["peer_id"]

    # the backup is current; a change to the groups makes it stale, and the CLI says so (no terminal to ask)
    rc, _, err = await cli(a.home, "group", "create", "h")
    assert rc == 0 and "no longer covers" in err and "cobox keys backup --peer" in err and "asks again" in err
    await ok(a.home, "keys", "backup", "--peer", peer_s, "--user", "alice", "--password-stdin", stdin=PASSWORD)
    rc, _, err = await cli(a.home, "group", "leave", "h", "--yes")
    assert "no longer covers" in err
    await ok(a.home, "keys", "backup", "--peer", peer_s, "--user", "alice", "--password-stdin", stdin=PASSWORD)

    # a home whose identity is in use (it has a group) is not overwritten without --force
    other = await daemons("other")
    await ok(other.home, "group", "create", "mine")
    other_id = (await other.status())["peer_id"]
    old_key = (other.home / "identity.key").read_bytes()
    rc, _, err = await cli(other.home, "keys", "restore", "--peer", peer_s, "--user", "alice", "--password-stdin",
                           stdin=PASSWORD)
    assert rc == 1 and "--force" in err and other_id[:16] in err
    assert (other.home / "identity.key").read_bytes() == old_key
    assert (await other.status())["peer_id"] == other_id

    out = await ok(other.home, "keys", "restore", "--peer", peer_s, "--user", "alice", "--password-stdin",
                   "--force", "--yes", stdin=PASSWORD)
    assert "kept as identity.key.replaced-" in out and f"syncing {photos}" in out
    kept = list(other.home.glob("identity.key.replaced-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == old_key and stat.S_IMODE(kept[0].stat().st_mode) == 0o600
    # it returned only when the restarted daemon answers: the very next command works, under the new identity
    status = json.loads(await ok(other.home, "status", "--json"))
    assert status["peer_id"] == a_id
    assert sorted(g["name"] for g in status["groups"]) == ["g", "mine"]
    assert [f["path"] for f in json.loads(await ok(other.home, "folder", "list", "--json"))] == [str(photos)]
