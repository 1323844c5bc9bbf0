from __future__ import annotations

import stat

import nacl.bindings
import pytest

from networker.errors import IdentityError
from networker.identity import DeviceIdentity, peer_id_to_x25519


def test_created_with_mode_0600_and_reloads_identically(tmp_path):
    path = tmp_path / "identity.key"
    first = DeviceIdentity.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = DeviceIdentity.load_or_create(path)
    assert again.peer_id == first.peer_id
    assert first.seed.hex() not in repr(first)


def test_noise_key_is_the_x25519_conversion():
    ident = DeviceIdentity.generate()
    public = nacl.bindings.crypto_scalarmult_base(ident.noise_private_key())
    assert public == peer_id_to_x25519(ident.peer_id)


def test_malformed_identity_file_is_refused_and_kept(tmp_path):
    path = tmp_path / "identity.key"
    path.write_bytes(b"short")
    with pytest.raises(IdentityError, match="malformed"):
        DeviceIdentity.load_or_create(path)
    assert path.read_bytes() == b"short"
