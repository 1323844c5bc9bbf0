"""Errors raised by the network layer.

``RemoteProtocolError`` and its subclasses mean the *remote* side misbehaved (malformed
frames, a bad capability, unverifiable data): the connection to it is closed. Everything else
is about our side or the network itself.
"""

from __future__ import annotations


class NetworkError(Exception):
    """A network operation failed."""

    code = "network_error"


class AddressError(NetworkError, ValueError):
    """An address could not be parsed; the message names the bad part."""

    code = "bad_address"


class KeyEncodingError(NetworkError, ValueError):
    """A key in text form is not valid base32 of the right length."""

    code = "bad_key"


class IdentityError(NetworkError):
    """The device identity file is missing, unreadable or malformed."""

    code = "bad_identity"


class HandshakeError(NetworkError):
    """The Noise handshake failed."""

    code = "handshake_failed"


class HandshakeTimeoutError(HandshakeError):
    """The peer did not complete the handshake in time."""

    code = "handshake_timeout"


class PeerKeyMismatchError(HandshakeError):
    """The peer's key differs from the key in the address that was dialed."""

    code = "peer_key_mismatch"


class DialError(NetworkError):
    """Every alternative of an address failed to connect; ``reasons`` says why, per
    alternative."""

    code = "dial_failed"

    def __init__(self, message: str, reasons: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.reasons = reasons or []


class ConnectionClosedError(NetworkError):
    """The connection is closed."""

    code = "connection_closed"


class MessageTooLargeError(NetworkError):
    """A message is larger than the protocol allows."""

    code = "message_too_large"


class RemoteProtocolError(NetworkError):
    """The remote peer broke the protocol; it is disconnected."""

    code = "remote_protocol_error"


class LanError(NetworkError):
    """LAN discovery (mDNS) could not start: the mDNS port or the chosen interfaces are not
    usable, or another device already advertises this peer id on the network."""

    code = "lan_failed"


class MalformedLanRecordError(RemoteProtocolError):
    """A device on the local network advertised a cobox mDNS record that cannot be parsed (bad
    peer id, bad discovery key, missing fields); the record is ignored."""

    code = "bad_lan_record"


class DHTError(NetworkError):
    """A DHT operation failed."""

    code = "dht_error"


class DHTNotStartedError(DHTError):
    """The DHT node is not running: call ``start()`` first (or it was stopped)."""

    code = "dht_not_started"


class InvalidRecordError(DHTError, RemoteProtocolError):
    """A peer record is malformed, too large, wrongly signed or names a foreign key; it is
    dropped."""

    code = "invalid_record"


class RecordExpiredError(InvalidRecordError):
    """A peer record is past its expiry time; it is dropped."""

    code = "record_expired"


class DHTStateError(DHTError):
    """The saved DHT state file cannot be read or is malformed (the node starts without it)."""

    code = "bad_dht_state"


class HandshakeClosedError(HandshakeError):
    """The peer closed the connection (or it broke) before the handshake finished."""

    code = "handshake_closed"


class ConnectionLimitError(NetworkError):
    """No slot for this connection: every connection slot is held by a peer that shares a group
    with this device (``network.max_connections``)."""

    code = "connection_limit"


class PeerPausedError(NetworkError):
    """This device's user paused that device: no connection to it until it is resumed."""

    code = "peer_paused"


class PeerRefusedError(NetworkError):
    """The peer, or its IP address, broke the protocol recently and keeps coming back: it is
    refused for ``retry_after`` more seconds (the refusal doubles with each new offence)."""

    code = "peer_refused"

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
