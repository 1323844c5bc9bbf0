"""cobox.xchacha is libsodium's XChaCha20-Poly1305-IETF, byte for byte, on every path."""

from __future__ import annotations

import os

import nacl.bindings
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cobox import xchacha

SIZES = [0, 1, 100, xchacha.FAST_FROM - 1, xchacha.FAST_FROM, 80 * 1024, (1 << 20) + 3]


@pytest.fixture(params=["fast", "pynacl only"])
def path(request, monkeypatch):  # type: ignore[no-untyped-def]
    if request.param == "pynacl only":  # a machine where libsodium's HChaCha20 symbol is not found
        monkeypatch.setattr(xchacha, "_hchacha20", None)
    else:
        assert xchacha._hchacha20 is not None  # found here: the fast path is what these tests run
    return request.param


@pytest.mark.parametrize("size", SIZES)
def test_the_same_bytes_as_libsodium_both_ways(path, size) -> None:  # type: ignore[no-untyped-def]
    key, nonce, ad, plain = os.urandom(32), os.urandom(24), os.urandom(40), os.urandom(size)
    sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, ad, nonce, key)
    assert xchacha.encrypt(plain, ad, nonce, key) == sealed
    assert xchacha.decrypt(sealed, ad, nonce, key) == plain
    assert xchacha.decrypt(memoryview(b"xx" + sealed)[2:], ad, nonce, key) == plain  # a view, not a copy


@pytest.mark.parametrize("size", SIZES)
def test_a_changed_byte_anywhere_is_refused(path, size) -> None:  # type: ignore[no-untyped-def]
    key, nonce, ad, plain = os.urandom(32), os.urandom(24), os.urandom(40), os.urandom(size)
    sealed = xchacha.encrypt(plain, ad, nonce, key)
    for k in {0, len(sealed) // 2, len(sealed) - 1}:
        bad = bytearray(sealed)
        bad[k] ^= 1
        assert xchacha.decrypt(bytes(bad), ad, nonce, key) is None
    assert xchacha.decrypt(sealed, ad + b"!", nonce, key) is None  # another place
    assert xchacha.decrypt(sealed, ad, nonce[:-1] + bytes([nonce[-1] ^ 1]), key) is None  # the nonce's tail
    assert xchacha.decrypt(sealed, ad, bytes([nonce[0] ^ 1]) + nonce[1:], key) is None  # the subkey's part
    assert xchacha.decrypt(sealed, ad, nonce, os.urandom(32)) is None
    assert xchacha.decrypt(sealed[:-1], ad, nonce, key) is None
    assert xchacha.decrypt(sealed[:xchacha.TAG_BYTES - 1], ad, nonce, key) is None


def test_the_fast_path_is_found_here() -> None:
    assert xchacha._hchacha20 is not None  # else every figure in bench/README.md is PyNaCl's


@pytest.mark.parametrize("bad", [
    dict(key=bytes(31)), dict(key=bytearray(32)), dict(nonce=bytes(23)), dict(nonce=memoryview(bytes(24)))])
@pytest.mark.parametrize("size", [10, 10 * xchacha.FAST_FROM])
def test_a_wrong_key_or_nonce_is_refused_the_same_way_on_every_path(path, bad, size) -> None:  # type: ignore[no-untyped-def]
    args = dict(key=bytes(32), nonce=bytes(24)) | bad
    with pytest.raises(ValueError):
        xchacha.encrypt(bytes(size), b"", args["nonce"], args["key"])
    with pytest.raises(ValueError):
        xchacha.decrypt(bytes(size), b"", args["nonce"], args["key"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plain=st.binary(max_size=3 * xchacha.FAST_FROM), ad=st.binary(max_size=64),
       nonce=st.binary(min_size=24, max_size=24), key=st.binary(min_size=32, max_size=32))
def test_any_input_matches_libsodium(path, plain, ad, nonce, key) -> None:  # type: ignore[no-untyped-def]
    sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, ad, nonce, key)
    assert xchacha.encrypt(plain, ad, nonce, key) == sealed
    assert xchacha.decrypt(sealed, ad, nonce, key) == plain
