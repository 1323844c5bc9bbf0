"""cobox.xchacha: XChaCha20-Poly1305 on OpenSSL gives libsodium's bytes exactly."""

from __future__ import annotations

import random

import nacl.bindings
import pytest

from cobox import xchacha


def test_hchacha20_matches_the_draft_test_vector() -> None:
    # draft-irtf-cfrg-xchacha-03, section 2.2.1
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a0000000031415927")
    want = bytes.fromhex("82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc")
    assert xchacha.hchacha20(key, nonce) == want


def test_sealing_and_opening_agree_with_libsodium_on_random_inputs() -> None:
    rnd = random.Random(7)
    sizes = [0, 1, 15, 16, 17, 63, 64, 65, 4095, 65536, 262145] + [rnd.randrange(1, 20000) for _ in range(200)]
    for n in sizes:
        key, nonce, aad = rnd.randbytes(32), rnd.randbytes(24), rnd.randbytes(rnd.choice((0, 8, 40)))
        plain = rnd.randbytes(n)
        sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, aad, nonce, key)
        assert xchacha.encrypt(key, nonce, plain, aad) == sealed, n
        out = bytearray(n + xchacha.TAG_BYTES)
        xchacha.encrypt_into(key, nonce, memoryview(plain), aad, out)
        assert out == sealed, n
        assert xchacha.decrypt(key, nonce, memoryview(sealed), aad) == plain, n


def test_decrypt_refuses_what_does_not_authenticate() -> None:
    key, nonce, aad = bytes(range(32)), bytes(24), b"place"
    sealed = xchacha.encrypt(key, nonce, b"hello", aad)
    assert xchacha.decrypt(key, nonce, sealed, aad) == b"hello"
    for k in range(len(sealed)):
        bad = bytearray(sealed)
        bad[k] ^= 1
        assert xchacha.decrypt(key, nonce, bad, aad) is None, k
    assert xchacha.decrypt(key, nonce, sealed, b"other place") is None
    assert xchacha.decrypt(key, bytes(23) + b"\1", sealed, aad) is None  # the last nonce byte counts
    assert xchacha.decrypt(key, b"\1" + bytes(23), sealed, aad) is None  # and the subkey's
    assert xchacha.decrypt(key, nonce, sealed[:15], aad) is None  # shorter than a tag


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        xchacha.encrypt(bytes(32), bytes(12), b"x", b"")
    with pytest.raises(ValueError):
        xchacha.hchacha20(bytes(31), bytes(16))
