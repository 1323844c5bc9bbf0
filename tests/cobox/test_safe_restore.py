"""Safe restore (issue 17 item 5), the pure parts: the identity is not overwritten while in use
unless forced, the old key is always kept (0600); the keyring carries folder bindings, strictly
decoded; its digest tells a stale backup."""

from __future__ import annotations

import stat

import msgpack
import pytest

from cobox.backup.device_keys import digest, replace_identity
from cobox.backup.keyring import GroupSecret, Keyring
from cobox.errors import IdentityInUseError, KeyringDecryptError
from networker.identity import DeviceIdentity

SEED = bytes(range(32))


def test_an_identity_in_use_is_not_replaced_without_force(tmp_path):
    path = tmp_path / "identity.key"
    old = DeviceIdentity.generate()
    old.save(path)
    with pytest.raises(IdentityInUseError, match="--force"):
        replace_identity(path, SEED, in_use=True, force=False)
    assert path.read_bytes() == old.seed and sorted(p.name for p in tmp_path.iterdir()) == ["identity.key"]
    kept = replace_identity(path, SEED, in_use=True, force=True)
    assert kept is not None and kept.startswith("identity.key.replaced-")
    assert path.read_bytes() == SEED
    assert (tmp_path / kept).read_bytes() == old.seed
    assert stat.S_IMODE((tmp_path / kept).stat().st_mode) == 0o600
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_fresh_identity_is_replaced_and_still_kept(tmp_path):
    path = tmp_path / "identity.key"
    first = DeviceIdentity.generate()
    first.save(path)
    kept = replace_identity(path, SEED, in_use=False, force=False)
    assert kept is not None and (tmp_path / kept).read_bytes() == first.seed
    assert replace_identity(path, SEED, in_use=True, force=False) is None  # already that identity: nothing to do
    second = replace_identity(path, DeviceIdentity.generate().seed, in_use=False, force=False)
    assert second is not None and second != kept  # two replacements in one second keep both
    assert len(list(tmp_path.glob("identity.key.replaced-*"))) == 2


def test_keyring_carries_folders_strictly():
    ring = Keyring(SEED, {"g": GroupSecret("address", bytes(32))}, {"g": "/home/alice/Photos"})
    assert Keyring.decode(ring.encode()) == ring
    for bad in ({"h": "/x"}, {"g": "relative/path"}, {"g": "/a\0b"}, {"g": 5}, {"g": "/" + "x" * 5000}):
        with pytest.raises(ValueError):
            Keyring(SEED, {"g": GroupSecret("address", bytes(32))}, bad)  # type: ignore[arg-type]
        blob = msgpack.packb({"identity_seed": SEED, "groups": {"g": ["address", bytes(32)]}, "folders": bad},
                             use_bin_type=True)
        with pytest.raises(KeyringDecryptError):
            Keyring.decode(blob)
    with pytest.raises(KeyringDecryptError):  # the old layout, without folders
        Keyring.decode(msgpack.packb({"identity_seed": SEED, "groups": {}}, use_bin_type=True))


def test_digest_tells_a_stale_backup():
    a = Keyring(SEED, {"g": GroupSecret("address", bytes(32))})
    same_shape_other_secret = Keyring(bytes(32), {"g": GroupSecret("address", b"\x01" * 32)})
    assert digest(a) == digest(same_shape_other_secret)  # it covers names and kinds, not secrets
    assert digest(a) != digest(Keyring(SEED, {"g": GroupSecret("address", bytes(32)),
                                              "h": GroupSecret("replication_key", bytes(32))}))
    assert digest(a) != digest(Keyring(SEED, {"g": GroupSecret("address", bytes(32))}, {"g": "/x"}))
