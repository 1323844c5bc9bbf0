"""Feed admissions: which device owns a feed of a group, established once, cryptographically.

Theory of operation
-------------------
Every feed of a group travels with an *admission* (networker relays it opaque, at most
``networker.messages.MAX_ADMISSION`` bytes, in ``Feeds``)::

    admission = device_id (32) || sig (64) || binding (64) || tag (32)
    sig     = Ed25519_sign(device key, FEED_OWNER_CONTEXT || discovery_key || feed_key)
    binding = Ed25519_sign(feed key, FEED_BINDING_CONTEXT || discovery_key || device_id)
    tag     = keyed_blake3(membership_key, FEED_OWNER_CONTEXT || feed_key || device_id)

The two signatures bind the pair both ways: the device ``device_id`` (its Ed25519 public key)
claims the feed for this group, and the feed (the holder of its secret key, its only writer)
names that device, so no member can claim another device's feed as its own (nor name another
device as the owner of its feed). The tag proves that whoever made the admission holds the
group address (a member). A member checks all three; a backup peer holds no membership key, so
it checks the signatures only and relays the whole admission, which members check again. The owner of a
feed is then the *author* of every record in it: records carry no author field, so nothing
inside an entry can claim another device.

``check`` raises only :class:`cobox.errors.AdmissionError`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

import nacl.exceptions
import nacl.signing

from networker import FEED_BINDING_CONTEXT, FEED_OWNER_CONTEXT, DeviceIdentity, owner_tag

from .errors import AdmissionError

ID_BYTES = 32
SIG_BYTES = 64
TAG_BYTES = 32
ADMISSION_BYTES = ID_BYTES + SIG_BYTES + SIG_BYTES + TAG_BYTES


def _claim(discovery_key: bytes, feed_key: bytes) -> bytes:
    return FEED_OWNER_CONTEXT + discovery_key + feed_key


def _binding(discovery_key: bytes, device_id: bytes) -> bytes:
    return FEED_BINDING_CONTEXT + discovery_key + device_id


def make(identity: DeviceIdentity, discovery_key: bytes, membership_key: bytes, feed_key: bytes,
         feed_sign: Callable[[bytes], bytes]) -> bytes:
    """The admission of ``feed_key``, owned by ``identity``, for the group of ``discovery_key``;
    ``feed_sign`` signs with the feed's secret key (``storage.Feed.sign_statement``)."""
    sig = identity.sign(_claim(discovery_key, feed_key))
    binding = feed_sign(_binding(discovery_key, identity.peer_id))
    return identity.peer_id + sig + binding + owner_tag(membership_key, feed_key, identity.peer_id)


def owner(admission: bytes) -> bytes:
    """The device named by an admission already checked."""
    return admission[:ID_BYTES]


def check(admission: bytes, discovery_key: bytes, feed_key: bytes, membership_key: bytes | None) -> bytes:
    """The owner device of ``feed_key`` if ``admission`` holds (the tag only when
    ``membership_key`` is given); else ``AdmissionError``."""
    if type(admission) is not bytes or len(admission) != ADMISSION_BYTES:
        raise AdmissionError(f"an admission is exactly {ADMISSION_BYTES} bytes")
    device, sig = admission[:ID_BYTES], admission[ID_BYTES:ID_BYTES + SIG_BYTES]
    binding, tag = admission[ID_BYTES + SIG_BYTES:-TAG_BYTES], admission[-TAG_BYTES:]
    if membership_key is not None and not hmac.compare_digest(owner_tag(membership_key, feed_key, device), tag):
        raise AdmissionError("the membership tag does not match (not admitted by a member)")
    try:
        nacl.signing.VerifyKey(device).verify(_claim(discovery_key, feed_key), sig)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise AdmissionError("the owner's signature does not verify") from None
    try:
        nacl.signing.VerifyKey(feed_key).verify(_binding(discovery_key, device), binding)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise AdmissionError("the feed's own signature does not name this owner") from None
    return device
