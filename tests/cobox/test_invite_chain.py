"""The chain of epochs in a member invite (cobox.uri): it round-trips, and hostile or damaged
chains are refused with an ``InvalidURIError`` naming the fault (pure, no daemon)."""

from __future__ import annotations

import os
import urllib.parse

import pytest

from cobox.epochs import given_share, make_record, resolve
from cobox.errors import InvalidURIError
from cobox.uri import MAX_CHAIN, MAX_URI, Invite, chain_check, chain_epoch, parse_invite
from networker import DeviceIdentity, GroupKeys, encode_key

GENESIS = os.urandom(32)
S1, S2A, S2B = os.urandom(32), os.urandom(32), os.urandom(32)
CHAIN = ((S1,), (S2A, S2B))


def uri(chain=CHAIN, check: bytes | None = None) -> str:
    text = Invite("join", GENESIS, "g", epochs=chain).format()
    if check is not None:
        text = text.replace(encode_key(chain_check(GENESIS, chain)), encode_key(check))
    return text


def with_query(text: str, old: str, new: str) -> str:
    return text.replace(old, new, 1)


def test_a_chain_round_trips_and_names_its_epoch():
    inv = parse_invite(uri())
    assert inv.key == GENESIS and inv.epochs == CHAIN
    assert inv.epoch == GroupKeys.for_epoch([S2A, S2B]).discovery_key == chain_epoch(GENESIS, CHAIN)
    assert "epochs=" not in Invite("join", GENESIS, "g").format()  # no removal: the plain invite
    assert parse_invite(Invite("join", GENESIS, "g").format()).epochs == ()
    assert encode_key(S1) not in repr(inv) and encode_key(GENESIS) not in repr(inv)


def test_a_chain_cut_at_a_step_boundary_does_not_lead_to_the_epoch_named():
    text = uri()
    cut = with_query(text, "." + "-".join(encode_key(s) for s in (S2A, S2B)), "")
    with pytest.raises(InvalidURIError, match="does not lead to the epoch it names"):
        parse_invite(cut)


def test_a_truncated_secret_or_a_uri_cut_before_the_epoch_is_refused():
    text = uri()
    with pytest.raises(InvalidURIError, match="step 2 is malformed or truncated"):
        parse_invite(with_query(text, encode_key(S2B), encode_key(S2B)[:30]))
    with pytest.raises(InvalidURIError, match="probably cut"):
        parse_invite(text[:text.index("&epoch=")])  # the end of the URI lost
    with pytest.raises(InvalidURIError, match="malformed or truncated"):
        parse_invite(with_query(text, encode_key(S1) + ".", encode_key(S1) + ".."))  # an empty step


def test_an_altered_chain_or_epoch_is_refused():
    other = os.urandom(32)
    with pytest.raises(InvalidURIError, match="does not lead"):
        parse_invite(with_query(uri(), encode_key(S1), encode_key(other)))
    with pytest.raises(InvalidURIError, match="does not lead"):
        parse_invite(uri(check=os.urandom(32)))
    with pytest.raises(InvalidURIError, match="does not lead"):  # the steps swapped
        parse_invite(uri(chain=(CHAIN[1], CHAIN[0]), check=chain_check(GENESIS, CHAIN)))
    with pytest.raises(InvalidURIError, match="does not lead"):  # the last step right, an earlier one not
        parse_invite(uri(chain=((other,), CHAIN[1]), check=chain_check(GENESIS, CHAIN)))
    with pytest.raises(InvalidURIError, match="repeats a secret"):
        parse_invite(uri(chain=((S1, S1),)))
    genesis_again = ((S1,), (GENESIS,))  # a step back to an epoch passed (GENESIS makes the genesis epoch)
    with pytest.raises(InvalidURIError, match="returns to an epoch"):
        parse_invite(uri(chain=genesis_again))


def test_oversized_and_repeated_chains_are_refused():
    many = tuple((os.urandom(32),) for _ in range(MAX_CHAIN + 1))
    text = uri(chain=many)
    assert len(text) <= MAX_URI  # short enough to reach the chain check itself
    with pytest.raises(InvalidURIError, match=f"more than {MAX_CHAIN} epoch secrets"):
        parse_invite(text)
    wide = (tuple(os.urandom(32) for _ in range(MAX_CHAIN + 1)),)
    with pytest.raises(InvalidURIError, match=f"more than {MAX_CHAIN} epoch secrets"):
        parse_invite(uri(chain=wide))
    with pytest.raises(InvalidURIError, match="two chains"):
        parse_invite(uri() + "&epochs=" + encode_key(S1))
    with pytest.raises(InvalidURIError, match="names two epochs"):
        parse_invite(uri() + "&epoch=" + encode_key(S1))
    seed = Invite("seed", GENESIS).format() + "?" + urllib.parse.urlencode({"epochs": encode_key(S1)})
    with pytest.raises(InvalidURIError, match="unknown parameter"):
        parse_invite(seed)  # a backup peer's invite carries no member secrets


def test_a_full_chain_still_leaves_room_for_hints():
    full = tuple((os.urandom(32),) for _ in range(MAX_CHAIN))
    inv = Invite("join", GENESIS, "g" * 64, epochs=full)
    peer = f"tcp:192.0.2.1:4000~noise:{encode_key(os.urandom(32))}"
    hinted = inv.with_hints([peer], [("192.0.2.2", 5000)])
    assert len(hinted.format()) <= MAX_URI and hinted.peers and hinted.dht
    assert parse_invite(hinted.format()).epochs == full


def test_resolve_follows_the_given_chain_before_any_record_and_the_records_after():
    a = DeviceIdentity.generate()
    newcomer = DeviceIdentity.generate().peer_id
    genesis = GroupKeys.from_address(GENESIS)
    removed = os.urandom(32)
    chain = ((S1,),)
    res = resolve(genesis, [], newcomer, {}, chain)  # nothing read yet: the invite's chain
    assert res.current(genesis).discovery_key == chain_epoch(GENESIS, chain)
    assert res.current(genesis).chunker_key == genesis.chunker_key
    assert res.steps[0].removed == frozenset() and res.steps[0].records == ()
    record = make_record(a.sign, a.peer_id, genesis.discovery_key, [removed], [a.peer_id], [], S1)
    share = given_share(record, chain)
    assert share is not None and share.secret == S1
    res = resolve(genesis, [record], newcomer, {record.digest: share}, chain)
    assert res.steps[0].removed == {removed} and res.current(genesis).discovery_key == record.epoch
    # A record the inviter did not know ends the same epoch: the union, of which the newcomer
    # holds no share: not carried (it needs a new invite).
    other = make_record(a.sign, a.peer_id, genesis.discovery_key, [os.urandom(32)], [a.peer_id], [], os.urandom(32))
    assert given_share(other, chain) is None
    res = resolve(genesis, [record, other], newcomer, {record.digest: share}, chain)
    assert res.not_carried is not None and res.steps == ()


def test_a_device_removed_then_invited_again_is_carried_over_by_the_invite():
    a, c = DeviceIdentity.generate(), DeviceIdentity.generate()
    genesis = GroupKeys.from_address(GENESIS)
    record = make_record(a.sign, a.peer_id, genesis.discovery_key, [c.peer_id], [a.peer_id], [], S1)
    assert resolve(genesis, [record], c.peer_id, {}).removed is not None  # its old invite: removed
    share = given_share(record, ((S1,),))
    res = resolve(genesis, [record], c.peer_id, {record.digest: share}, ((S1,),))  # the new invite
    assert res.removed is None and res.current(genesis).discovery_key == record.epoch
