"""Retransmission timeout from measured round trips, in the manner of TCP (RFC 6298).

Each answer the band sends gives a round-trip sample: from the moment the
request's last byte left the wire (the transport knows its speed, so time spent
queued behind earlier bytes is not counted) to the answer's arrival.  The
timeout is ``SRTT + 4 RTTVAR`` (before the first answer: ``initial``), doubled after every expiry (Karn's back-off)
until a fresh sample arrives, and never below ``floor`` (the transport's ``min_rto``).  Request ids
tell the answers to a retransmission and to its original apart, so every
sample is valid.
"""

from __future__ import annotations

from dataclasses import dataclass

INITIAL_RTO_S = 1.0
"""Before the first answer (RFC 6298 says 1 s); also the least wait for requests that make the band work its flash."""
KNOWN_SPEED_INITIAL_RTO_S = 0.25
"""Before the first answer on a link of known speed (serial), beyond the wire time of the exchange: a band
answers INFO in milliseconds, so a lost first frame costs a quarter second, not a second (4 tries in 3 s)."""
MIN_RTO_S = 0.03
"""Scheduling jitter of the two ends of a serial line (a transport may ask for a higher floor)."""
MAX_BACKOFF = 64


@dataclass
class RoundTripTimer:
    floor: float = MIN_RTO_S
    initial: float = INITIAL_RTO_S
    """The timeout before the first sample."""
    srtt: float | None = None
    rttvar: float = 0.0
    backoff: int = 1
    samples: int = 0

    def sample(self, rtt: float) -> None:
        """One measured round trip in seconds."""
        rtt = max(0.0, rtt)
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.backoff = 1
        self.samples += 1

    def expired(self) -> None:
        """A wait timed out: back off until the next sample."""
        self.backoff = min(self.backoff * 2, MAX_BACKOFF)

    @property
    def rto(self) -> float:
        """How long to wait for an answer after the request left the wire."""
        base = self.initial if self.srtt is None else max(self.floor, self.srtt + 4 * self.rttvar)
        return base * self.backoff
