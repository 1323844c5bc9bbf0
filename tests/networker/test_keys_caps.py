from __future__ import annotations

import os

from networker import caps
from networker.keys import GroupKeys, membership_tag


def test_group_keys_are_distinct_and_deterministic():
    address = os.urandom(32)
    k = GroupKeys.from_address(address)
    assert k == GroupKeys.from_address(address)
    values = {k.encryption_key, k.replication_key, k.membership_key, k.discovery_key, address}
    assert len(values) == 5


def test_backup_peer_keys_hold_no_secret():
    k = GroupKeys.from_address(os.urandom(32))
    b = GroupKeys.from_replication_key(k.replication_key)
    assert b.discovery_key == k.discovery_key
    assert b.encryption_key is None and b.membership_key is None and b.address is None


def test_membership_tag_depends_on_key_and_feed():
    k1, k2 = os.urandom(32), os.urandom(32)
    f = os.urandom(32)
    assert membership_tag(k1, f) != membership_tag(k2, f)
    assert membership_tag(k1, f) != membership_tag(k1, os.urandom(32))


def test_capability_binds_key_handshake_and_role():
    rk, hh = os.urandom(32), os.urandom(64)
    proof = caps.capability(rk, hh, True)
    assert caps.verify_capability(rk, hh, True, proof)
    assert not caps.verify_capability(rk, hh, False, proof)  # reflected to the other role
    assert not caps.verify_capability(rk, os.urandom(64), True, proof)  # another connection
    assert not caps.verify_capability(os.urandom(32), hh, True, proof)  # without the key
