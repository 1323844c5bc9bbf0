"""Epochs: the pure rules of removing a device from a group (no I/O, no sockets).

Theory of operation
-------------------
A group starts in its *genesis epoch* (the keys of its address). Removing devices ends an epoch:
the remover draws a fresh 32-byte *epoch secret*, seals it (libsodium sealed box to the X25519
form of the Ed25519 device id) to every remaining member, seals its replication key (what a backup
peer holds today, never the address) to every backup peer, signs the record with its device key
and appends it, unencrypted, to its own feed of the epoch it ends (``cobox.entries_epoch``: epoch
records). The record names that epoch (``parent``: its discovery key) and the new one (``epoch``).

Checking a record (:func:`verify`): well-formed (strict decoder), ``parent`` is the epoch whose
feed holds it, its remover is the owner of that feed (its admission, checked by the caller) and
signed it; a box sealed to this device opens, and what it holds derives ``epoch`` (so a remover
cannot seal garbage, or another epoch's keys, unnoticed). Anything else raises
:class:`MalformedEpochRecordError`: the record is refused and reported; the epoch stays.

Concurrent removals (:func:`resolve`). Several members may end the same epoch at once. Rule: the
successor of epoch ``P`` is the *union* of every valid record naming ``P``: it removes every
device any of them removes, and its keys come from all their secrets, in order of record hash
(``networker.keys.GroupKeys.for_epoch``; one record: plainly its secret). Why the union and not
"lowest hash wins": (1) it is a function of the *set* of records, so every device that holds
the same records reaches the same epoch whatever order they arrived in; (2) a removal sticks:
with "lowest hash wins" a removed device, which still holds ``P``'s address, could publish a
counter-removal of its remover with a lower hash (grinding costs it about two tries) and stay;
under the union it cannot undo its removal, only remove more devices with it, who then need a
new invite (and everyone sees who removed whom); (3) the keys need no extra round: every device
kept by the union is a recipient of every record (each record seals to all but its own
removed), and every removed device lacks the secret of the record that removed it. A record
that arrives late (its epoch already had a successor) changes that successor: devices move to
the new union; what was written in the one they leave stays readable (they keep its keys).
The chain is followed from genesis until an epoch has no record naming it, at most
``MAX_EPOCHS`` steps.

A device learns from :func:`resolve` either the chain of epochs it holds keys for, or that a
step removed it (``Resolution.removed``: by whom, when), or that a step sealed it nothing
(``not_carried``: the remover did not know it; it needs a new invite), after which it stays in
the last epoch it holds and is refused there by the others.

A device invited after a removal (``given``): its invite carries the group's genesis address
and the secrets of every step since (``cobox.uri``: ``epochs=``, checked there to lead to the
epoch the invite names), so it needs nothing sealed to it for the past. :func:`resolve` takes
those *given steps*: from an epoch that a given step leaves, the step is the given one (its keys
from the given secrets; the records naming that epoch, once read, give who it removed and kept,
and each opens with a given secret, ``given_share``); a record naming that epoch that the
inviter did not know makes the union as usual (the newcomer has no share of it: not carried).
A device removed in a given step and invited again since is not removed by it here.
Without any record yet, a given step removes nobody and names no members: the gate then admits
in the past epochs the devices that hold a feed in a later one (``cobox.removal``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.signing

from networker import GroupKeys
from networker.keys import replication_key

from .entries import EPOCH_MAGIC
from .entries_epoch import EPOCH_SIGN_CONTEXT, EpochRecord, decode_epoch, epoch_body
from .errors import MalformedEpochRecordError

if TYPE_CHECKING:
    from .groups import Group

MAX_EPOCHS = 256
SECRET_BYTES = 32
EPOCH_NOTICE = "cobox/epoch-notice"  # extension: the records that removed the receiver (cobox.removal)


class EpochGate(Protocol):
    """Who may take part in one epoch of a group (``cobox.removal``): a device it does not
    admit owns no feed and holds no channel there."""

    def admits(self, device: bytes) -> bool: ...

    def refuse_channel(self, group: Group, channel: Any) -> None:
        """Tell the peer of ``channel`` why (an ``EPOCH_NOTICE``), and close the channel."""
        ...

    async def on_notice(self, group: Group, peer_id: bytes, body: bytes) -> None: ...


def seal_to(device_id: bytes, secret: bytes) -> bytes:
    """``secret`` sealed to the X25519 form of the Ed25519 device id ``device_id``."""
    pk = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(device_id)
    return nacl.public.SealedBox(nacl.public.PublicKey(pk)).encrypt(secret)


def open_sealed(x25519_private: bytes, box: bytes) -> bytes:
    """Open a box sealed to this device (``DeviceIdentity.noise_private_key()``)."""
    try:
        secret = nacl.public.SealedBox(nacl.public.PrivateKey(x25519_private)).decrypt(box)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise MalformedEpochRecordError("epoch record: the box sealed to this device does not open") from None
    if len(secret) != SECRET_BYTES:
        raise MalformedEpochRecordError("epoch record: the box sealed to this device holds no secret")
    return secret


def make_record(sign: Callable[[bytes], bytes], remover: bytes, parent: bytes, removed: Iterable[bytes],
                members: Iterable[bytes], seeds: Iterable[bytes], secret: bytes,
                when: float | None = None) -> EpochRecord:
    """The signed record of ``remover`` ending epoch ``parent``: ``removed`` go, ``members``
    (the remover among them) are sealed ``secret``, ``seeds`` its replication key."""
    gone = sorted(set(removed))
    kept = sorted(set(members) - set(gone) | {remover})
    kept_seeds = sorted(set(seeds) - set(gone) - set(kept))
    rk = replication_key(secret)
    body = epoch_body(parent, GroupKeys.from_address(secret).discovery_key, remover, gone,
                      [(d, seal_to(d, secret)) for d in kept], [(d, seal_to(d, rk)) for d in kept_seeds],
                      time.time() if when is None else when)
    return decode_epoch(b"".join((EPOCH_MAGIC, sign(EPOCH_SIGN_CONTEXT + body), body)))


def verify(data: bytes, *, parent: bytes, owner: bytes | None) -> EpochRecord:
    """The record in ``data`` found in a feed of epoch ``parent`` owned by ``owner``, if it is
    well-formed, names that epoch and is signed by that owner; else ``MalformedEpochRecordError``."""
    record = decode_epoch(data)
    if record.parent != parent:
        raise MalformedEpochRecordError("epoch record: names another epoch than the one it is in")
    if owner is None or record.remover != owner:
        raise MalformedEpochRecordError("epoch record: the remover is not the member whose feed holds it")
    try:
        nacl.signing.VerifyKey(record.remover).verify(EPOCH_SIGN_CONTEXT + record.body, record.sig)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise MalformedEpochRecordError("epoch record: not signed by its remover") from None
    return record


@dataclass(frozen=True)
class Opened:
    """What one record gives this device: ``secret`` is the epoch secret (a member) or the
    replication key (a backup peer)."""

    role: str  # "member" | "seed"
    secret: bytes


def open_record(record: EpochRecord, device: bytes, x25519_private: bytes) -> Opened | None:
    """This device's share of ``record``: ``None`` if nothing is sealed to it;
    ``MalformedEpochRecordError`` if its box is garbage or does not derive ``record.epoch``."""
    found = record.box_for(device)
    if found is None:
        return None
    role, box = found
    secret = open_sealed(x25519_private, box)
    keys = GroupKeys.from_address(secret) if role == "member" else GroupKeys.from_replication_key(secret)
    if keys.discovery_key != record.epoch:
        raise MalformedEpochRecordError("epoch record: the sealed secret does not make the epoch it names")
    return Opened(role, secret)


@dataclass(frozen=True)
class Step:
    """One epoch change: the records naming ``parent`` (by hash), and what they make."""

    parent: bytes
    records: tuple[EpochRecord, ...]
    removed: frozenset[bytes]
    members: frozenset[bytes]  # kept by every record
    seeds: frozenset[bytes]
    keys: GroupKeys | None  # this device's keys of the new epoch (None: it has none)
    secrets: tuple[bytes, ...] = field(default=(), repr=False)  # a member's: what makes ``keys`` (an invite's chain)

    @property
    def removers(self) -> tuple[bytes, ...]:
        return tuple(r.remover for r in self.records)

    @property
    def time(self) -> float:
        return max((r.time for r in self.records), default=0.0)


@dataclass(frozen=True)
class Resolution:
    steps: tuple[Step, ...]  # the epochs this device holds keys for, oldest first
    removed: Step | None = None  # the step that removed this device
    not_carried: Step | None = None  # the step that sealed this device nothing

    def current(self, genesis: GroupKeys) -> GroupKeys:
        return self.steps[-1].keys if self.steps and self.steps[-1].keys is not None else genesis


def step_of(parent: bytes, records: list[EpochRecord], opened: dict[bytes, Opened],
            chunker: bytes | None) -> Step:
    """The union of ``records`` (all naming ``parent``); ``opened``: this device's shares by digest."""
    rs = sorted(records, key=lambda r: r.digest)
    removed = frozenset(d for r in rs for d in r.removed)
    members = frozenset.intersection(*(frozenset(d for d, _ in r.members) for r in rs)) - removed
    seeds = frozenset.intersection(*(frozenset(d for d, _ in r.seeds) for r in rs)) - removed - members
    shares = [opened.get(r.digest) for r in rs]
    keys: GroupKeys | None = None
    secrets: tuple[bytes, ...] = ()
    if all(s is not None and s.role == "member" for s in shares):
        secrets = tuple(s.secret for s in shares if s is not None)
        keys = GroupKeys.for_epoch(secrets, chunker)
    elif all(s is not None and s.role == "seed" for s in shares):
        keys = GroupKeys.for_seed_epoch([s.secret for s in shares if s is not None])
    return Step(parent, tuple(rs), removed, members, seeds, keys, secrets)


def given_share(record: EpochRecord, given: Sequence[Sequence[bytes]]) -> Opened | None:
    """The share of ``record`` a newcomer holds from its invite's chain: the given secret that
    makes the epoch the record names (``None``: the inviter did not know this record)."""
    for step in given:
        for secret in step:
            if GroupKeys.from_address(secret).discovery_key == record.epoch:
                return Opened("member", secret)
    return None


def _given_step(parent: bytes, records: list[EpochRecord], secrets: Sequence[bytes],
                chunker: bytes | None) -> Step | None:
    """The given step leaving ``parent`` with what ``records`` (naming ``parent``) say; ``None``
    if a record names an epoch outside it (the inviter did not know it: the usual union)."""
    made = {GroupKeys.from_address(s).discovery_key for s in secrets}
    if any(r.epoch not in made for r in records):
        return None
    rs = sorted(records, key=lambda r: r.digest)
    removed = frozenset(d for r in rs for d in r.removed)
    members = (frozenset.intersection(*(frozenset(d for d, _ in r.members) for r in rs)) - removed
               if rs else frozenset())
    seeds = (frozenset.intersection(*(frozenset(d for d, _ in r.seeds) for r in rs)) - removed - members
             if rs else frozenset())
    return Step(parent, tuple(rs), removed, members, seeds, GroupKeys.for_epoch(list(secrets), chunker),
                tuple(secrets))


def resolve(genesis: GroupKeys, records: Iterable[EpochRecord], device: bytes,
            opened: dict[bytes, Opened], given: Sequence[Sequence[bytes]] = ()) -> Resolution:
    """Follow the chain from ``genesis`` over every verified record (any order, duplicates
    ignored); ``opened`` holds this device's share of each record it could open; ``given``: the
    steps of an invite's chain (see above)."""
    by_parent: dict[bytes, dict[bytes, EpochRecord]] = {}
    for r in records:
        by_parent.setdefault(r.parent, {})[r.digest] = r
    ahead: dict[bytes, Sequence[bytes]] = {}  # epoch -> the given step that leaves it
    dk = genesis.discovery_key
    for secrets in given[:MAX_EPOCHS]:
        ahead[dk] = secrets
        dk = GroupKeys.for_epoch(list(secrets)).discovery_key
    steps: list[Step] = []
    current = genesis.discovery_key
    seen = {current}
    for _ in range(MAX_EPOCHS):
        named = list(by_parent.get(current, {}).values())
        mine = ahead.get(current)
        step = _given_step(current, named, mine, genesis.chunker_key) if mine is not None else None
        if step is None:
            if not named:
                break
            step = step_of(current, named, opened, genesis.chunker_key)
        elif device in step.removed:  # re-invited since its removal: the invite carries it over
            step = replace(step, removed=step.removed - {device})
        if device in step.removed:
            return Resolution(tuple(steps), removed=step)
        if step.keys is None or step.keys.discovery_key in seen:
            return Resolution(tuple(steps), not_carried=step)
        steps.append(step)
        current = step.keys.discovery_key
        seen.add(current)
    return Resolution(tuple(steps))
