"""Backup as a service, the pure core: the invite URI, the capability and its proof, the wire
decoders (fed hostile bytes) and the quota decisions."""

from __future__ import annotations

import random

import msgpack
import pytest

from cobox.errors import InvalidURIError, MalformedHostingError
from cobox.hosting import invites, quota
from cobox.hosting.invites import BackupHost, Hosted, HostInvite, invite_id, proof, proof_key
from cobox.hosting.messages import Op, Request, State, Statement
from cobox.uri import MAX_URI, BackupInvite, parse_backup_invite, parse_invite
from networker import DeviceIdentity, encode_key

HOST = DeviceIdentity.from_seed(bytes(range(32)))
OTHER = DeviceIdentity.from_seed(bytes(range(1, 33)))
SECRET = bytes(range(100, 132))
HH = bytes(32 * [7])


def addr(key: bytes, port: int = 4000) -> str:
    return f"tcp:127.0.0.1:{port}~noise:{encode_key(key)}"


# -- the URI ------------------------------------------------------------------------------------


def test_a_service_invite_round_trips_with_its_hints():
    inv = BackupInvite(HOST.peer_id, SECRET).with_hints([addr(HOST.peer_id), addr(OTHER.peer_id)],
                                                      [("127.0.0.1", 6881)])
    assert inv.peers == (addr(HOST.peer_id),)  # only the host's own addresses are hints
    text = inv.format()
    assert text.startswith("cobox://backup/") and len(text) <= MAX_URI
    assert parse_backup_invite(text) == inv
    assert encode_key(SECRET) not in repr(inv)


def test_with_hints_keeps_a_service_invite_bounded():
    many = [f"tcp:10.0.0.{k}:4000~noise:{encode_key(HOST.peer_id)}" for k in range(50)]
    inv = BackupInvite(HOST.peer_id, SECRET).with_hints(many, [(f"10.0.1.{k}", 6881) for k in range(50)])
    assert len(inv.format()) <= MAX_URI and 0 < len(inv.peers) <= 4 and len(inv.dht) <= 4


@pytest.mark.parametrize("mutate,says", [
    (lambda t: t.replace("cap=", "cep="), "unknown parameter"),
    (lambda t: t.split("?")[0], "no capability"),
    (lambda t: t.replace("cap=", "cap=x"), "capability is malformed"),
    (lambda t: t + "&cap=" + encode_key(SECRET), "two capabilities"),
    (lambda t: t.replace("cobox://backup/", "cobox://backup/a"), "host key is malformed"),
    (lambda t: t + "#frag", "fragment"),
    (lambda t: t + "&peer=" + addr(OTHER.peer_id), "host's own key"),
    (lambda t: t + "&peer=tcp:example.org:1~noise:" + encode_key(HOST.peer_id), "host's own key"),
    (lambda t: t + "&dht=nothost", "not IP:PORT"),
    (lambda t: t + "&x=" + "a" * MAX_URI, "too long"),
    (lambda t: t.replace("cobox://backup/", "cobox://join/"), "group invite"),
    (lambda t: "https://example.org", "not a backup host's service invite"),
])
def test_broken_service_invites_get_a_clear_error(mutate, says):
    text = BackupInvite(HOST.peer_id, SECRET, (addr(HOST.peer_id),)).format()
    with pytest.raises(InvalidURIError, match=says):
        parse_backup_invite(mutate(text))


def test_a_service_invite_is_no_group_invite():
    with pytest.raises(InvalidURIError, match="backup add"):
        parse_invite(BackupInvite(HOST.peer_id, SECRET).format())


# -- the capability -------------------------------------------------------------------------------


def test_the_host_keeps_neither_the_secret_nor_anything_that_shows_it():
    inv = HostInvite(invite_id(SECRET), proof_key(SECRET), 1, 1, 0.0, "", 1.0)
    assert SECRET not in inv.encode() and invite_id(SECRET) != proof_key(SECRET)[:16]
    assert HostInvite.decode(inv.encode()) == inv


def test_a_proof_is_bound_to_its_connection_role_and_request():
    key = proof_key(SECRET)
    p = proof(key, HH, True, Op.ADD, b"r" * 32)
    assert invites.check_proof(key, HH, True, Op.ADD, b"r" * 32, p)
    assert not invites.check_proof(key, bytes(32), True, Op.ADD, b"r" * 32, p)  # another connection
    assert not invites.check_proof(key, HH, False, Op.ADD, b"r" * 32, p)        # reflected back
    assert not invites.check_proof(key, HH, True, Op.REMOVE, b"r" * 32, p)      # another request
    assert not invites.check_proof(key, HH, True, Op.ADD, b"s" * 32, p)         # another group
    assert not invites.check_proof(proof_key(bytes(32)), HH, True, Op.ADD, b"r" * 32, p)


# -- the wire and the records, fed hostile bytes -------------------------------------------------


def statement(state: State = State.ACTIVE, signer: DeviceIdentity = HOST) -> Statement:
    return Statement(signer.peer_id, b"d" * 32, b"i" * 16, b"m" * 32, state, 10, 20, 1000).signed(signer.sign)


def test_statements_verify_only_for_their_host_group_and_invite():
    st = statement()
    assert Statement.decode(st.encode()).verify(HOST.peer_id, b"d" * 32, b"i" * 16) == st
    with pytest.raises(MalformedHostingError, match="another host"):
        st.verify(OTHER.peer_id, b"d" * 32, b"i" * 16)
    with pytest.raises(MalformedHostingError, match="another host, group"):
        st.verify(HOST.peer_id, b"e" * 32, b"i" * 16)
    forged = Statement(HOST.peer_id, b"d" * 32, b"i" * 16, b"m" * 32, State.ACTIVE, 10, 20, 1000,
                       statement(signer=OTHER).signature)
    with pytest.raises(MalformedHostingError, match="not signed"):
        forged.verify(HOST.peer_id, b"d" * 32, b"i" * 16)
    tampered = Statement.decode(st.encode()[:-70] + msgpack.packb(11) + st.encode()[-69:])
    with pytest.raises(MalformedHostingError):
        tampered.verify(HOST.peer_id, b"d" * 32, b"i" * 16)


@pytest.mark.parametrize("body", [
    b"", b"\xc1", msgpack.packb([1, b"i" * 16, b"p" * 32]), msgpack.packb([9, b"i" * 16, b"p" * 32, b"s" * 32]),
    msgpack.packb([1, b"i" * 15, b"p" * 32, b"s" * 32]), msgpack.packb([True, b"i" * 16, b"p" * 32, b"s" * 32]),
    msgpack.packb({"op": 1}), msgpack.packb([1, "i" * 16, b"p" * 32, b"s" * 32]), b"\x91" * 5000,
])
def test_malformed_requests_raise_only_the_decode_error(body):
    with pytest.raises(MalformedHostingError):
        Request.decode(body)


def test_fuzzed_wire_and_records_raise_only_the_decode_error():
    rng = random.Random(20)
    samples = [Request(Op.ADD, b"i" * 16, b"p" * 32, b"s" * 32).encode(), statement().encode(),
               HostInvite(b"i" * 16, b"k" * 32, 1, 2, 3.0, "x", 4.0).encode(),
               Hosted(b"d" * 32, b"i" * 16, b"m" * 32, "n", 1.0).encode(),
               BackupHost(b"d" * 32, b"h" * 32, b"i" * 16, b"k" * 32, ("a",), 1.0, b"").encode()]
    decoders = [Request.decode, Statement.decode, HostInvite.decode, Hosted.decode, BackupHost.decode]
    for _ in range(3000):
        k = rng.randrange(len(samples))
        data = bytearray(samples[k])
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(3)
            pos = rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(pos, len(data) - 1)] = rng.randrange(256)
            elif op == 1:
                data[pos:pos] = bytes([rng.randrange(256)])
            else:
                del data[pos:pos + rng.randint(1, 8)]
        try:
            decoders[k](bytes(data))
        except MalformedHostingError:
            pass
    with pytest.raises(MalformedHostingError, match="unknown state"):
        Statement.decode(msgpack.packb([b"h" * 32, b"d" * 32, b"i" * 16, b"m" * 32, 9, 0, 0, 0, b"s" * 64]))


# -- quota -------------------------------------------------------------------------------------------


INV = HostInvite(b"i" * 16, b"k" * 32, quota_bytes=1000, max_groups=2, expires=100.0, label="", created=0.0)
HOSTED = Hosted(b"d" * 32, b"i" * 16, b"m" * 32, "hosted-x", 1.0)


NO_USE = quota.Use(0, 0)
NO_LIMITS = quota.Limits()


def refuse(inv=INV, proof_ok=True, use=NO_USE, now=50.0, kept=False, total=0, limits=NO_LIMITS):
    return quota.refuse_add(inv, proof_ok, use, now=now, already_kept=kept, hosted_total=total, limits=limits)


def test_the_add_decision_table_in_its_order():
    assert refuse() is None
    assert refuse(inv=None) == refuse(proof_ok=False) == quota.NO_INVITE  # unknown and wrong proof look alike
    revoked = HostInvite(INV.id, INV.proof_key, 1000, 2, 100.0, "", 0.0, revoked=60.0)
    assert "revoked" in refuse(inv=revoked, now=200.0)  # revoked wins over expired
    assert "expired" in refuse(now=100.0)
    assert "keeps that group already" in refuse(kept=True, use=quota.Use(2, 1000))
    assert "no more groups" in refuse(total=3, limits=quota.Limits(max_groups=3))
    assert "2 groups are all used" in refuse(use=quota.Use(2, 0))
    assert "used up" in refuse(use=quota.Use(1, 1000))
    never = HostInvite(INV.id, INV.proof_key, 0, 0, 0.0, "", 0.0)
    assert refuse(inv=never, now=1e11, use=quota.Use(100, 1 << 40)) is None


def test_a_kept_group_takes_data_while_no_quota_is_reached_and_nothing_is_revoked():
    lim = quota.Limits(group_quota_bytes=300)
    assert quota.state(INV, HOSTED, 999, 299, lim) is State.ACTIVE
    assert quota.state(INV, HOSTED, 1000, 10, lim) is State.FULL     # the invite's groups together
    assert quota.state(INV, HOSTED, 500, 300, lim) is State.FULL     # this group
    gone = Hosted(HOSTED.discovery_key, HOSTED.invite, HOSTED.device, HOSTED.name, 1.0, revoked=2.0)
    assert quota.state(INV, gone, 0, 0, lim) is State.REVOKED
    assert quota.state(None, HOSTED, 0, 0, lim) is State.REVOKED
    assert quota.group_quota(INV, 800, 100, lim) == 300 and quota.group_quota(INV, 800, 100, quota.Limits()) == 300
    assert quota.group_quota(None, 0, 0, quota.Limits()) == 0
