"""How the companion sizes upload frames for a transport's MTU."""

from __future__ import annotations

import pytest

from companion.client import BandClient
from protocol.framing import max_wire_size
from protocol.messages import UPLOAD_DATA_OVERHEAD


class FakeLink:
    """Only the MTU matters here; nothing is sent."""

    address = "test:"
    min_rto = 0.25
    bytes_per_second = None  # speed unknown, as on BLE

    def __init__(self, mtu: int) -> None:
        self.mtu = mtu


def chunk_for(mtu: int, band_max: int = 248) -> int:
    return BandClient(FakeLink(mtu))._chunk_size(band_max)  # type: ignore[arg-type]


def writes(chunk: int, mtu: int) -> int:
    return -(-max_wire_size(UPLOAD_DATA_OVERHEAD + chunk) // mtu)


def test_serial_uses_the_band_limit():
    assert chunk_for(4096) == 248


def test_large_ble_mtu_puts_one_frame_in_one_write():
    chunk = chunk_for(244)
    assert writes(chunk, 244) == 1
    assert writes(chunk + 1, 244) == 2


@pytest.mark.parametrize("mtu", [20, 23, 100, 182, 244])
def test_no_other_chunk_carries_more_bytes_per_write(mtu):
    chosen = chunk_for(mtu)
    best = max(chunk / writes(chunk, mtu) for chunk in range(1, 249))
    assert chosen / writes(chosen, mtu) == best


def test_small_mtu_frames_span_writes_instead_of_shrinking():
    chunk = chunk_for(20)
    assert chunk > 200 and chunk / writes(chunk, 20) > 18
