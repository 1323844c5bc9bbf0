"""Invite URIs: the one way a group's secrets travel between people.

    cobox://join/<address>?name=<name>     a member invite: the 32-byte group address
        [&epochs=<s1>.<s2a>-<s2b>&epoch=<K>]   after device removals: the chain of epochs since
    cobox://seed/<replication key>         a backup-peer invite: replicate, never read
    cobox://backup/<host key>?cap=<secret> a service invite of a backup host (:class:`BackupInvite`):
                                           ``cobox backup add GROUP URI`` on a member

Keys are in cobox's one text form (lowercase base32, 52 characters). Anything else, including a
truncated key, is refused with an :class:`InvalidURIError` that says what is wrong.

Hints, so a device can join with nothing configured (no bootstrap node): any invite may carry
``peer=ADDRESS`` (the inviter's addresses others can dial, each a ``tcp:IP:PORT~noise:KEY``, or
a relayed one ``tcp:IP:PORT~noise:RELAYKEY~relay:KEY``: the inviter through a relay it holds a
reservation with, which the joiner can also use as a relay of its own) and ``dht=IP:PORT`` (DHT
nodes to start from), at most :data:`MAX_HINTS` of each (relayed addresses keep up to
:data:`RELAYED_ROOM` places among the peer hints, after the direct ones). Parsing is strict:
the whole URI is at most :data:`MAX_URI` characters; an unknown or repeated parameter, a peer
address that is not TCP to an IP literal with a key, or a DHT contact that is not IP:PORT is an
error naming the bad part. Hints only say where to look: a peer must still prove its key in the
handshake, and nothing from an invite is dialled but those addresses.

The chain of epochs (:class:`Invite` ``epochs``, ``epoch``). After a device removal the group is
in a later epoch (``cobox.epochs``) whose keys were sealed only to the devices kept then. An
invite made in such an epoch names the group by its *genesis* address (so the newcomer derives
the same chunker key as every member, and the same origin of synced state) and carries, in
``epochs=``, every epoch secret since: the steps in order, separated by ``.``, the secrets of one
step (several for concurrent removals, in record-hash order) by ``-``; ``epoch=`` names the
epoch the invite is for by its chain: a hash of the discovery keys of every epoch from genesis
to it, in order (:func:`chain_check`), so a step lost or a secret changed anywhere is caught (an
epoch's keys do not depend on its parent: without it a wrong earlier secret would go unnoticed,
and the newcomer would find only later that it cannot read that epoch). Why in the invite and not sealed to the newcomer
later by a member (the other way the issue allowed): the invite is already a bearer secret for
the whole group (whoever holds it reads all that is written from now on, and is served the past
epochs' feeds), so the past secrets add no power; the newcomer has them the moment it joins (no
member needs to be online again, no new record kind, no window in which its folder would chunk
with a wrong key or show only the newest epoch); and the check is local and strict. The price is
length: 53 characters a secret, at most :data:`MAX_CHAIN` secrets (a group that went through
more removals cannot invite, with a clear error: make a new group), and hints are dropped first
to keep :data:`MAX_URI`. Parsing refuses a malformed secret, a step with too many, more than
:data:`MAX_CHAIN` in all, ``epochs`` without ``epoch`` (or the reverse), and a chain that does
not lead from the address to the epoch named (cut at a step boundary, or altered).
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from dataclasses import dataclass

from blake3 import blake3

from networker import AddressError, GroupKeys, KeyEncodingError, decode_key, encode_key
from networker import parse_address as parse

from .errors import InvalidURIError

SCHEME = "cobox"
MAX_URI = 2048
MAX_NAME = 64
MAX_HINTS = 4
MAX_HINT = 200
RELAYED_ROOM = 2
MAX_CHAIN = 16  # epoch secrets an invite carries (53 characters each)
CHAIN_CONTEXT = b"cobox invite chain of epochs v1"
STEP_SEP, SECRET_SEP = ".", "-"  # not in the base32 alphabet, unreserved in a URI


@dataclass(frozen=True)
class Invite:
    kind: str  # "join" | "seed"
    key: bytes  # the group address (join) or replication key (seed)
    name: str | None = None
    peers: tuple[str, ...] = ()             # inviter's dialable addresses (tcp:IP:PORT~noise:KEY)
    dht: tuple[tuple[str, int], ...] = ()   # DHT nodes to bootstrap from
    epochs: tuple[tuple[bytes, ...], ...] = ()  # join: the secrets of each step since genesis (``key``)

    def __repr__(self) -> str:  # never show the key
        return (f"Invite(kind={self.kind!r}, name={self.name!r}, epochs={len(self.epochs)}, peers={len(self.peers)}, "
                f"dht={len(self.dht)})")

    def format(self) -> str:
        text = f"{SCHEME}://{self.kind}/{encode_key(self.key)}"
        query: list[tuple[str, str]] = [("name", self.name)] if self.name else []
        if self.epochs:
            query += [("epochs", STEP_SEP.join(SECRET_SEP.join(encode_key(s) for s in step) for step in self.epochs)),
                      ("epoch", encode_key(chain_check(self.key, self.epochs)))]
        query += [("peer", p) for p in self.peers[:MAX_HINTS]]
        query += [("dht", f"[{h}]:{p}" if ":" in h else f"{h}:{p}") for h, p in self.dht[:MAX_HINTS]]
        if query:
            text += "?" + urllib.parse.urlencode(query)
        return text

    @property
    def epoch(self) -> bytes | None:
        """The discovery key of the epoch a chain leads to (``None``: no chain)."""
        return chain_epoch(self.key, self.epochs) if self.epochs else None

    def with_hints(self, peers: list[str], dht: list[tuple[str, int]]) -> Invite:
        """This invite with the first hints that keep it within :data:`MAX_URI` characters."""
        out = Invite(self.kind, self.key, self.name, epochs=self.epochs)
        usable = [h for h in dict.fromkeys(_peer_hint(p) for p in peers) if h is not None]
        relayed = [h for h in usable if "~relay:" in h][:RELAYED_ROOM]
        direct = [h for h in usable if "~relay:" not in h][:MAX_HINTS - len(relayed)]
        for p in direct + relayed:
            bigger = Invite(out.kind, out.key, out.name, (*out.peers, p), out.dht, out.epochs)
            if len(bigger.format()) <= MAX_URI:
                out = bigger
        for h in list(dict.fromkeys(dht))[:MAX_HINTS]:
            bigger = Invite(out.kind, out.key, out.name, out.peers, (*out.dht, h), out.epochs)
            if _ip(h[0]) and 0 < h[1] < 65536 and len(bigger.format()) <= MAX_URI:
                out = bigger
        return out


def parse_invite(text: str) -> Invite:
    text = text.strip()
    if len(text) > MAX_URI:
        raise InvalidURIError("invite URI too long")
    if not text.startswith(f"{SCHEME}://"):
        raise InvalidURIError("not a cobox invite (expected cobox://join/... or cobox://seed/...)")
    parts = urllib.parse.urlsplit(text)
    kind = parts.netloc
    if kind == "backup":
        raise InvalidURIError("a backup host's service invite, not a group invite: give it to "
                              "`cobox backup add GROUP URI` on a member")
    if kind not in ("join", "seed"):
        raise InvalidURIError(f"unknown invite kind {kind!r} (expected 'join' or 'seed')")
    key_text = parts.path.lstrip("/")
    if not key_text:
        raise InvalidURIError("invite URI has no key")
    key, pairs = _key_and_query(parts, key_text, "invite key", "invite URI", 3 + 2 * MAX_HINTS)
    name: str | None = None
    peers: list[str] = []
    dht: list[tuple[str, int]] = []
    chain: tuple[tuple[bytes, ...], ...] | None = None
    epoch: bytes | None = None
    for field, value in pairs:
        if field == "name":
            if name is not None:
                raise InvalidURIError("invite URI names the group twice")
            name = validate_name(value)
        elif field == "epochs" and kind == "join":
            if chain is not None:
                raise InvalidURIError("invite URI has two chains of epochs")
            chain = parse_chain(value)
        elif field == "epoch" and kind == "join":
            if epoch is not None:
                raise InvalidURIError("invite URI names two epochs")
            try:
                epoch = decode_key(value)
            except KeyEncodingError:
                raise InvalidURIError("invite epoch is malformed or truncated (52 base32 characters)") from None
        elif field == "peer":
            hint = _peer_hint(value)
            if hint is None:
                raise InvalidURIError(f"invite peer hint {value[:80]!r} is not tcp:IP:PORT~noise:KEY "
                                      "(or tcp:IP:PORT~noise:RELAYKEY~relay:KEY)")
            peers.append(hint)
        elif field == "dht":
            contact = _dht_hint(value)
            if contact is None:
                raise InvalidURIError(f"invite DHT hint {value[:80]!r} is not IP:PORT")
            dht.append(contact)
        else:
            raise InvalidURIError(f"invite URI has an unknown parameter {field[:20]!r}")
    if len(peers) > MAX_HINTS or len(dht) > MAX_HINTS:
        raise InvalidURIError(f"invite URI has more than {MAX_HINTS} peer or DHT hints")
    if (chain is None) != (epoch is None):
        raise InvalidURIError("invite URI has a chain of epochs without the epoch it leads to, or the reverse: "
                              "it was probably cut; ask for the invite again")
    if chain is not None and epoch is not None:
        check_chain(key, chain, epoch)
    return Invite(kind, key, name, tuple(peers), tuple(dht), chain or ())


def parse_chain(text: str) -> tuple[tuple[bytes, ...], ...]:
    """The steps of ``epochs=`` (see the module docstring); ``InvalidURIError`` naming the fault."""
    if len(text) > MAX_CHAIN * 53:
        raise InvalidURIError(f"invite carries more than {MAX_CHAIN} epoch secrets")
    steps = text.split(STEP_SEP)
    secrets = [s for step in steps for s in step.split(SECRET_SEP)]
    if len(secrets) > MAX_CHAIN:
        raise InvalidURIError(f"invite carries more than {MAX_CHAIN} epoch secrets")
    out = []
    for k, step in enumerate(steps):
        try:
            out.append(tuple(decode_key(s) for s in step.split(SECRET_SEP)))
        except KeyEncodingError:
            raise InvalidURIError(f"invite epoch secret in step {k + 1} is malformed or truncated "
                                  "(expected 52 base32 characters each)") from None
        if len(set(out[-1])) != len(out[-1]):
            raise InvalidURIError(f"invite epoch step {k + 1} repeats a secret")
    return tuple(out)


def chain_epoch(address: bytes, chain: tuple[tuple[bytes, ...], ...]) -> bytes:
    """The discovery key of the epoch ``chain`` leads to from the genesis ``address``."""
    dk = GroupKeys.from_address(address).discovery_key
    for step in chain:
        dk = GroupKeys.for_epoch(list(step)).discovery_key
    return dk


def chain_check(address: bytes, chain: tuple[tuple[bytes, ...], ...]) -> bytes:
    """What ``epoch=`` holds: a hash of the discovery keys of the epochs of ``chain``, in order."""
    dks = [GroupKeys.from_address(address).discovery_key, *(GroupKeys.for_epoch(list(s)).discovery_key for s in chain)]
    return blake3(CHAIN_CONTEXT + b"".join(dks)).digest()


def check_chain(address: bytes, chain: tuple[tuple[bytes, ...], ...], check: bytes) -> None:
    """``InvalidURIError`` unless ``chain`` from ``address`` hashes to ``check`` through epochs
    all different (no step back to one already passed)."""
    seen = {GroupKeys.from_address(address).discovery_key}
    for step in chain:
        dk = GroupKeys.for_epoch(list(step)).discovery_key
        if dk in seen:
            raise InvalidURIError("invite chain of epochs returns to an epoch it passed: it was altered")
        seen.add(dk)
    if chain_check(address, chain) != check:
        raise InvalidURIError("invite chain of epochs does not lead to the epoch it names: it was cut or "
                              "altered; ask for the invite again")


def _ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _peer_hint(text: str) -> str | None:
    """The address, formatted, if it is one TCP alternative to an IP literal with a key (a
    relayed one names the relay's key and the inviter's)."""
    if len(text) > MAX_HINT:
        return None
    try:
        alts = parse(text).alternatives
    except AddressError:
        return None
    if len(alts) != 1 or alts[0].transport != "tcp" or alts[0].peer_key is None or not _ip(alts[0].host):
        return None
    return alts[0].format()


def _dht_hint(text: str) -> tuple[str, int] | None:
    if len(text) > 64:
        return None
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        return None  # an IPv6 host must be in brackets
    if not sep or not _ip(host) or not port.isdigit() or len(port) > 5 or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def validate_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME or any(c in name for c in "/\\\n\r\t\0") or name.startswith("."):
        raise InvalidURIError(f"invalid group name {name[:MAX_NAME]!r}")
    return name


@dataclass(frozen=True)
class BackupInvite:
    """A backup host's service invite: its peer key (pinned: only that key may answer), the
    capability secret of this invite, and hints of where the host is (every peer hint must name
    the host's key). Parsed as strictly as a group invite; at most :data:`MAX_URI` characters."""

    host: bytes
    secret: bytes
    peers: tuple[str, ...] = ()
    dht: tuple[tuple[str, int], ...] = ()

    def __repr__(self) -> str:  # never show the secret
        return f"BackupInvite(host={self.host.hex()[:16]}, peers={len(self.peers)}, dht={len(self.dht)})"

    def format(self) -> str:
        query = [("cap", encode_key(self.secret))] + [("peer", p) for p in self.peers[:MAX_HINTS]]
        query += [("dht", f"[{h}]:{p}" if ":" in h else f"{h}:{p}") for h, p in self.dht[:MAX_HINTS]]
        return f"{SCHEME}://backup/{encode_key(self.host)}?" + urllib.parse.urlencode(query)

    def with_hints(self, peers: list[str], dht: list[tuple[str, int]]) -> BackupInvite:
        """This invite with the hints of a group invite that reach the host (its own key)."""
        hints = Invite("seed", self.host).with_hints(peers, dht)  # the same choice and bounds
        mine = tuple(p for p in hints.peers if parse(p).alternatives[0].peer_key == self.host)
        out = BackupInvite(self.host, self.secret, mine, hints.dht)
        while len(out.format()) > MAX_URI and (out.dht or out.peers):  # the cap= takes room too
            out = BackupInvite(self.host, self.secret, out.peers, out.dht[:-1]) if out.dht else \
                BackupInvite(self.host, self.secret, out.peers[:-1], ())
        return out


def parse_backup_invite(text: str) -> BackupInvite:
    """Parse ``cobox://backup/<host key>?cap=<secret>[&peer=...][&dht=...]``; raise
    :class:`InvalidURIError` naming what is wrong."""
    text = text.strip()
    if len(text) > MAX_URI:
        raise InvalidURIError("service invite URI too long")
    if text.startswith(f"{SCHEME}://join/") or text.startswith(f"{SCHEME}://seed/"):
        raise InvalidURIError("a group invite, not a backup host's service invite: ask the host for "
                              "`cobox service invite`")
    if not text.startswith(f"{SCHEME}://backup/"):
        raise InvalidURIError("not a backup host's service invite (expected cobox://backup/...)")
    parts = urllib.parse.urlsplit(text)
    host, pairs = _key_and_query(parts, parts.path.lstrip("/"), "service invite: the host key", "service invite",
                                 1 + 2 * MAX_HINTS)
    secret: bytes | None = None
    peers: list[str] = []
    dht: list[tuple[str, int]] = []
    for field, value in pairs:
        if field == "cap":
            if secret is not None:
                raise InvalidURIError("service invite has two capabilities")
            try:
                secret = decode_key(value)
            except KeyEncodingError:
                raise InvalidURIError("service invite: the capability is malformed or truncated") from None
        elif field == "peer":
            hint = _peer_hint(value)
            if hint is None or parse(hint).alternatives[0].peer_key != host:
                raise InvalidURIError(f"service invite peer hint {value[:80]!r} is not tcp:IP:PORT~noise:HOSTKEY "
                                      "(or ~noise:RELAYKEY~relay:HOSTKEY) of the host's own key")
            peers.append(hint)
        elif field == "dht":
            contact = _dht_hint(value)
            if contact is None:
                raise InvalidURIError(f"service invite DHT hint {value[:80]!r} is not IP:PORT")
            dht.append(contact)
        else:
            raise InvalidURIError(f"service invite has an unknown parameter {field[:20]!r}")
    if secret is None:
        raise InvalidURIError("service invite has no capability (cap=...): it was probably cut")
    if len(peers) > MAX_HINTS or len(dht) > MAX_HINTS:
        raise InvalidURIError(f"service invite has more than {MAX_HINTS} peer or DHT hints")
    return BackupInvite(host, secret, tuple(peers), tuple(dht))


def _key_and_query(parts: urllib.parse.SplitResult, key_text: str, key_what: str, what: str,
                   max_fields: int) -> tuple[bytes, list[tuple[str, str]]]:
    """The key of an invite (``key_text``) and its query pairs, strictly: a malformed key, a
    fragment or a malformed or too long query is refused naming ``what``."""
    try:
        key = decode_key(key_text)
    except KeyEncodingError:
        raise InvalidURIError(f"{key_what} is malformed or truncated (expected 52 base32 characters)") from None
    if parts.fragment:
        raise InvalidURIError(f"{what} has a fragment (#...): it was probably cut or joined with other text")
    try:
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query),
                                       max_num_fields=max_fields)
    except ValueError as e:
        raise InvalidURIError(f"{what} has a malformed query: {e}") from None
    return key, pairs
