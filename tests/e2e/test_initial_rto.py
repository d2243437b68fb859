"""The first request on a serial link: retried soon enough to get several tries within the default timeout."""

from __future__ import annotations

import pytest

from companion.client import DEFAULT_TIMEOUT, BandClient, BandTimeout
from companion.rtt import INITIAL_RTO_S
from firmware_sim.handler import ProtocolHandler
from protocol.constants import MAX_FRAME_PAYLOAD
from protocol.framing import max_wire_size

from .link_relay import ByteFaults
from .test_link_robustness import Loopback, band_with
from .test_paced_link import run_virtual


class SerialLoopback(Loopback):
    """The loopback at a UART's pace: its speed is known, so the client's timer counts wire time."""

    def __init__(self, *args: object, baud: int = 115200, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.baud = baud

    @property
    def bytes_per_second(self) -> float:
        return self.baud / 10

    @property
    def min_rto(self) -> float:
        return 0.03


def tries_of_a_lost_first_info(transport: SerialLoopback) -> int:
    async def job() -> None:
        await BandClient(transport).connect()

    with pytest.raises(BandTimeout, match="INFO"):
        run_virtual(job)
    return len(transport.sent)


def test_a_first_info_lost_on_serial_is_tried_at_least_four_times_within_the_default_timeout():
    transport = SerialLoopback(ProtocolHandler(band_with()), to_band=lambda data: b"")  # every frame to the band lost
    assert tries_of_a_lost_first_info(transport) >= 4


def test_the_first_timeout_on_serial_still_covers_the_wire_time_of_a_slow_line():
    transport = SerialLoopback(ProtocolHandler(band_with()), baud=1200)
    client = BandClient(transport)
    assert client.rtt.rto >= 2 * transport.wire_time(max_wire_size(MAX_FRAME_PAYLOAD))
    assert BandClient(Loopback(ProtocolHandler(band_with()))).rtt.rto == INITIAL_RTO_S  # speed unknown: RFC 6298's 1 s


def test_a_fresh_connection_gets_through_a_noisy_serial_line():
    """1 % of the bytes each way corrupted, as in the issue: INFO at connect still gets its answer in the default timeout."""
    for seed in range(20):
        transport = SerialLoopback(ProtocolHandler(band_with()), to_band=ByteFaults(seed=seed, corrupt=0.01))

        async def job(transport: SerialLoopback = transport) -> None:
            async with BandClient(transport, timeout=DEFAULT_TIMEOUT) as client:
                assert client.band_info is not None

        run_virtual(job)
