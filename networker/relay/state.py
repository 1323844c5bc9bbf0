"""A relay's bookkeeping, sans-IO: reservations, circuits being set up and spliced, and the
byte-rate buckets that bound what it forwards. Circuits between two of the relay's own group
members (a backup peer relaying for its group) are *exempt*: no circuit or rate limits, not
counted.

Theory of operation
-------------------
A device behind NAT *reserves*: it keeps one control connection open to the relay, which
stores it under the device's authenticated peer id (a newer reservation of the same id replaces
the older). A dialer asks for a circuit to a reserved target: the relay refuses at once if the
target has no reservation or the relay is at its limits (``max_circuits`` spliced or being set
up, ``max_pending`` being set up); otherwise it picks a random circuit id, tells the target on
its reservation, and waits ``accept_timeout`` seconds for the target to come back on a new
connection with that id. Only the target (by its authenticated peer id) can accept a circuit,
and only once. A spliced circuit counts against ``max_circuits`` until it closes.

Forwarded bytes go through two :class:`ByteBucket` s, one of the circuit and the relay's
total; each says how long to wait before sending a chunk. A rate of 0 means unlimited. Every
method takes the time as an argument, so all of this is tested without sockets or sleeps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .wire import NO_RESERVATION, NOT_ALLOWED, RELAY_FULL

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RelayLimits:
    max_reservations: int = 128
    max_circuits: int = 32  # spliced or being set up
    max_pending: int = 16  # being set up
    circuit_bytes_per_second: int = 4 * 1024 * 1024  # 0: unlimited
    total_bytes_per_second: int = 16 * 1024 * 1024  # 0: unlimited
    reservation_ttl: int = 60  # seconds a reservation lives without a ping
    accept_timeout: float = 10.0


class ByteBucket:
    """``rate`` bytes per second with bursts of one second's worth (at least 64 KiB);
    :meth:`take` returns the seconds to wait before ``n`` bytes may go (0: now). ``rate`` 0:
    unlimited."""

    def __init__(self, rate: int, now: float) -> None:
        self.rate = rate
        self.burst = max(rate, 65536)
        self.tokens = float(self.burst)
        self.at = now

    def take(self, n: int, now: float) -> float:
        if self.rate <= 0:
            return 0.0
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


@dataclass
class Circuit(Generic[T]):
    id: bytes
    dialer: bytes
    target: bytes
    deadline: float
    accepted: T | None = None  # the target's connection, once it accepted
    spliced: bool = False
    bytes_forwarded: int = 0
    exempt: bool = False  # a circuit of the relay's own group members: no limits


@dataclass(frozen=True, slots=True)
class Refusal:
    code: int
    reason: str


@dataclass
class RelayState(Generic[T]):
    """Reservations (peer id -> its control connection, of type ``T``) and circuits."""

    limits: RelayLimits = field(default_factory=RelayLimits)
    reservations: dict[bytes, T] = field(default_factory=dict)
    circuits: dict[bytes, Circuit[T]] = field(default_factory=dict)
    circuits_total: int = 0
    refused_total: int = 0

    def reserve(self, peer_id: bytes, control: T) -> tuple[T | None, Refusal | None]:
        """Keep ``control`` as ``peer_id``'s reservation; returns the reservation it replaces
        (to close) or a refusal."""
        old = self.reservations.get(peer_id)
        if old is None and len(self.reservations) >= self.limits.max_reservations:
            self.refused_total += 1
            return None, Refusal(RELAY_FULL, f"relay full ({self.limits.max_reservations} reservations)")
        self.reservations[peer_id] = control
        return old, None

    def unreserve(self, peer_id: bytes, control: T) -> None:
        if self.reservations.get(peer_id) is control:
            del self.reservations[peer_id]

    def pending(self) -> int:
        return sum(1 for c in self.circuits.values() if not c.spliced)

    def open_circuit(self, dialer: bytes, target: bytes, now: float, *,
                     exempt: bool = False) -> tuple[Circuit[T] | None, Refusal | None]:
        """A circuit being set up, or a refusal; an ``exempt`` circuit (for the relay's own
        group members) is not held to the circuit limits, nor counted against them."""
        self.expire(now)
        limited = [c for c in self.circuits.values() if not c.exempt]
        refusal = None
        if dialer == target:
            refusal = Refusal(NOT_ALLOWED, "a circuit to oneself")
        elif target not in self.reservations:
            refusal = Refusal(NO_RESERVATION, "the target has no reservation here")
        elif exempt:  # no circuit or rate limit, but circuits being set up stay bounded
            if sum(1 for c in self.circuits.values() if c.exempt and not c.spliced) >= self.limits.max_pending:
                refusal = Refusal(RELAY_FULL, f"relay busy ({self.limits.max_pending} circuits being set up)")
        elif len(limited) >= self.limits.max_circuits:
            refusal = Refusal(RELAY_FULL, f"relay full ({self.limits.max_circuits} circuits)")
        elif sum(1 for c in limited if not c.spliced) >= self.limits.max_pending:
            refusal = Refusal(RELAY_FULL, f"relay busy ({self.limits.max_pending} circuits being set up)")
        if refusal is not None:
            self.refused_total += 1
            return None, refusal
        circuit: Circuit[T] = Circuit(os.urandom(16), dialer, target, now + self.limits.accept_timeout, exempt=exempt)
        self.circuits[circuit.id] = circuit
        return circuit, None

    def accept(self, circuit_id: bytes, peer_id: bytes, conn: T, now: float) -> Circuit[T] | None:
        """The circuit ``peer_id`` accepts with ``conn``; ``None`` if there is no such circuit
        waiting for that peer (unknown, expired, already accepted, or someone else's)."""
        self.expire(now)
        circuit = self.circuits.get(circuit_id)
        if circuit is None or circuit.target != peer_id or circuit.accepted is not None:
            return None
        circuit.accepted = conn
        return circuit

    def spliced(self, circuit: Circuit[T]) -> None:
        circuit.spliced = True
        self.circuits_total += 1

    def close_circuit(self, circuit: Circuit[T]) -> None:
        self.circuits.pop(circuit.id, None)

    def expire(self, now: float) -> list[Circuit[T]]:
        """Drop circuits whose target did not accept in time; return them."""
        gone = [c for c in self.circuits.values() if not c.spliced and c.accepted is None and c.deadline <= now]
        for c in gone:
            del self.circuits[c.id]
        return gone
