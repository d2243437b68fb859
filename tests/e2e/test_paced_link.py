"""The paced virtual BLE link: connection events, packets per event, loss and retransmission.

Everything runs through the real stacks (the band's bumble peripheral, bleak on the
bumble backend, BandClient) on an event loop whose clock jumps to the next timer when
nothing is ready, so the link's timing is exact and the tests take no real time
waiting: they assert event numbers, counts, order and exact virtual times.
"""

from __future__ import annotations

import asyncio
import itertools
import selectors
import subprocess
import sys
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from bleak import BleakScanner

from ble_stack.addresses import free_tcp_port
from ble_stack.paced_link import T_IFS_US, LinkTiming, PacedLink, _PacedConnection, air_time_us, att_write_fragments, exchange_us, parse_interval_ms
from companion.ble.bumble_backend import BumbleCentral
from companion.client import BandClient
from firmware_sim.local import LocalBleBand
from protocol.table import check_table_header

from .test_ble_e2e import ADDRESS, big_table

EXACT = 1e-9


class _FastForwardSelector:
    """Wraps the loop's selector: when nothing is ready, time jumps to the next timer instead of sleeping."""

    def __init__(self, selector: selectors.BaseSelector, loop: VirtualTimeLoop) -> None:
        self._selector = selector
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = self._selector.select(0)
        if not ready and timeout is not None and timeout > 0:
            self._loop.now += timeout
        elif not ready and timeout is None:
            ready = self._selector.select(1.0)  # nothing scheduled: only I/O can wake us
        return ready

    def __getattr__(self, name: str) -> Any:
        return getattr(self._selector, name)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` only advances when every task is waiting for a timer."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self._selector = _FastForwardSelector(self._selector, self)  # type: ignore[has-type,arg-type]

    def time(self) -> float:
        return self.now


def run_virtual(job: Callable[[], Awaitable[Any]]) -> Any:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(asyncio.wait_for(job(), 600.0))  # virtual seconds


class Arrivals:
    """Records every ACL PDU (and its loop time) that the link hands to a controller."""

    def __init__(self, link: PacedLink) -> None:
        self.pdus: dict[str, list[tuple[float, bytes]]] = {}
        for controller in link.controllers:
            received = self.pdus.setdefault(controller.name, [])
            original = controller.on_link_acl_data

            def on_link_acl_data(sender: Any, transport: Any, data: bytes, original: Any = original, received: Any = received) -> None:
                received.append((asyncio.get_running_loop().time(), data))
                original(sender, transport, data)

            controller.on_link_acl_data = on_link_acl_data  # type: ignore[method-assign,assignment]


async def upload_over(link: PacedLink, data: bytes) -> tuple[LocalBleBand, Arrivals, int]:
    """Connect through bleak, then upload ``data``; returns the band, what arrived, and where the upload's trace starts."""
    async with LocalBleBand(link=link) as local, BumbleCentral(link=link) as central, \
            BandClient.open(ADDRESS, ble=central.backend) as client:
        arrivals = Arrivals(link)
        first = len(link.trace or [])
        await client.upload(data)
        return local, arrivals, first


def test_timing_arithmetic():
    assert air_time_us(251, "1M") == 2088.0 and air_time_us(251, "2M") == 1048.0 and air_time_us(0, "1M") == 80.0
    # 251-byte packets at 1M: an exchange is 2468 us, so 3 fit in 7.5 ms and 6 in 15 ms.
    assert LinkTiming(7.5, 6, 251, "1M").effective_packets_per_event == 3
    assert LinkTiming(15.0, 6, 251, "1M").effective_packets_per_event == 6
    assert LinkTiming(7.5, 6, 251, "2M").effective_packets_per_event == 5
    assert LinkTiming(15.0, 6).limit_seconds(13) == pytest.approx(3 * 0.015)
    assert parse_interval_ms("15ms") == 15.0 and parse_interval_ms("7.5") == 7.5 and parse_interval_ms("0.05s") == 50.0
    for bad in ("5ms", "16ms", "fast"):
        with pytest.raises(ValueError):
            parse_interval_ms(bad)
    with pytest.raises(ValueError):
        LinkTiming(data_length=100)


ANCHOR = 0.001


def carry(timing: LinkTiming, up: Sequence[int], down: Sequence[int] = ()) -> tuple[PacedLink, list[float]]:
    """Queue L2CAP PDUs of these sizes each way on one paced connection (two bumble controllers), run its events.

    Returns the link (its trace) and the loop times at which each upstream PDU reached the peripheral.
    """
    from bumble.controller import Controller

    link = PacedLink(timing, trace=True)

    async def job() -> list[float]:
        central, peripheral = Controller("central", link=link), Controller("peripheral", link=link)
        connection = _PacedConnection(link, central, peripheral, anchor=ANCHOR)  # the first event after the PDUs are queued
        loop = asyncio.get_running_loop()
        arrived: list[float] = []
        for size in up:
            connection.enqueue(central, link._fragments("data", size, lambda: arrived.append(loop.time())))
        for size in down:
            connection.enqueue(peripheral, link._fragments("data", size, lambda: None))
        while any(connection.queues.values()) or len(arrived) < len(up):
            await asyncio.sleep(timing.interval_ms / 1000)
        return arrived

    return link, run_virtual(job)


def per_event(link: PacedLink, sender: str) -> list[int]:
    assert link.trace is not None
    counts = Counter(packet.event for packet in link.trace if packet.sender == sender and not packet.lost)
    return [counts[event] for event in sorted(counts)]


def test_events_are_filled_by_the_air_time_of_the_real_packets():
    """7.5 ms on 2M: six 189-byte packets (ATT MTU 185) fit with empty answers, five of 251 bytes, three when both send 251."""
    assert exchange_us(189, 0, "2M") == 1144.0 and exchange_us(27, 0, "2M") == 496.0
    assert exchange_us(251, 251, "2M") == 2396.0 and exchange_us(251, 251, "2M", encrypted=True) == 2428.0
    timing = LinkTiming(interval_ms=7.5, packets_per_event=6, data_length=251, phy="2M")
    assert (timing.packets_that_fit(189), timing.packets_that_fit(27), timing.packets_that_fit(251)) == (6, 6, 5)
    link, _ = carry(timing, [189] * 18)
    assert per_event(link, "central") == [6, 6, 6]  # a model of full packets allowed only five
    link, _ = carry(timing, [251] * 9, [251] * 9)
    assert per_event(link, "central") == per_event(link, "peripheral") == [3, 3, 3]
    assert LinkTiming(15.0, 6, 251, "2M").packets_that_fit(251) == 6


@pytest.mark.parametrize(("interval_ms", "phy"), [(7.5, "2M"), (7.5, "1M"), (15.0, "1M")])
def test_an_event_never_runs_into_the_next(interval_ms, phy):
    timing = LinkTiming(interval_ms=interval_ms, packets_per_event=8, data_length=251, phy=phy)
    link, _ = carry(timing, [251] * 12 + [30] * 12, [251] * 20)
    assert link.trace is not None
    ends: dict[int, float] = {}
    for packet in link.trace:
        ends[packet.event] = max(ends.get(packet.event, 0.0), packet.delivered_at)
    anchors = {packet.event: packet.anchor for packet in link.trace}
    for event, end in ends.items():  # the last packet of the event and the T_IFS after it end before the next anchor
        assert end + T_IFS_US / 1e6 <= anchors[event] + interval_ms / 1000 + EXACT
    assert len(set(anchors.values())) == len(anchors)


@pytest.mark.parametrize("data_length", [27, 251])
@pytest.mark.parametrize("mtu", [23, 50, 51, 53, 100, 185, 244, 247, 248, 250, 251, 400, 498, 499, 501, 517])
def test_the_physical_limit_is_what_the_link_carries(mtu, data_length):
    """The limit (``benchmarks.ble_upload.limit_seconds``) and the link agree: same packets, same events, same time."""
    from benchmarks.ble_upload import limit_seconds

    size = 3000
    fragments = att_write_fragments(size, mtu, data_length)
    value = mtu - 3
    writes = [7 + min(value, size - offset) for offset in range(0, size, value)]  # ATT (3) + L2CAP (4) headers
    assert len(att_write_fragments(value, mtu, data_length)) == -(-(mtu + 4) // data_length)
    for interval_ms, phy in ((7.5, "2M"), (15.0, "1M")):
        timing = LinkTiming(interval_ms=interval_ms, packets_per_event=6, data_length=data_length, phy=phy)
        link, arrived = carry(timing, writes)
        assert link.trace is not None and [p.size for p in link.trace] == fragments  # the same link packets
        events = link.stats.events
        limit = limit_seconds(size, mtu, timing)
        assert limit == pytest.approx(events * interval_ms / 1000)  # the same number of events
        last_anchor = max(p.anchor for p in link.trace)  # the last write lands in the last of those events
        assert last_anchor == pytest.approx(ANCHOR + limit - interval_ms / 1000) and max(arrived) < ANCHOR + limit


def test_packets_cross_only_at_connection_events_and_at_most_n_per_event():
    timing = LinkTiming(interval_ms=15.0, packets_per_event=3, data_length=251, phy="2M")
    link = PacedLink(timing, trace=True)
    data = big_table(300)
    check_table_header(data)
    local, arrivals, first = run_virtual(lambda: upload_over(link, data))
    assert local.band.storage.active_table() == data
    trace = link.trace
    assert trace is not None and len(trace) - first > len(data) // 251
    interval = timing.interval_ms / 1000
    anchors = {packet.anchor for packet in trace}
    origin = min(anchors)
    for packet in trace:
        # every event sits on the connection's grid, and its packets are on the air within it
        assert abs((packet.anchor - origin) / interval - round((packet.anchor - origin) / interval)) < 1e-6
        assert packet.anchor < packet.delivered_at < packet.anchor + interval
    per_event = Counter((packet.event, packet.sender) for packet in trace if not packet.lost)
    assert max(per_event.values()) == 3  # the upload filled events, and never beyond the limit
    # each PDU reached the other controller exactly when its last fragment had crossed, never in between
    crossing = sorted(packet.delivered_at for packet in trace if packet.last_fragment and packet.kind == "data")
    arrived = sorted(at for pdus in arrivals.pdus.values() for at, _ in pdus)
    assert arrived and all(any(abs(at - t) < EXACT for t in crossing) for at in arrived)


def test_loss_is_retransmitted_and_everything_arrives_once_in_order():
    link = PacedLink(LinkTiming(interval_ms=7.5, packets_per_event=4, loss=0.15, seed=7), trace=True)
    sent: list[bytes] = []
    send = link.send_acl_data

    def recording_send(sender: Any, destination: Any, transport: Any, data: bytes) -> None:
        if sender.name == "bleak-central":
            sent.append(data)
        send(sender, destination, transport, data)

    link.send_acl_data = recording_send  # type: ignore[method-assign,assignment]
    data = big_table(200)
    local, arrivals, _ = run_virtual(lambda: upload_over(link, data))
    assert local.band.storage.active_table() == data
    assert link.stats.lost > 5
    [band_name] = [name for name in arrivals.pdus if name != "bleak-central"]
    received = [pdu for _, pdu in arrivals.pdus[band_name]]
    assert received == sent[-len(received):]  # once each, in order, despite the losses
    trace = link.trace
    assert trace is not None
    for index, packet in enumerate(trace):
        if packet.lost:  # the same sender's next packet is the retransmission, in a later event
            again = next(p for p in trace[index + 1 :] if p.sender == packet.sender)
            assert again.event > packet.event and again.size == packet.size


def test_stop_and_wait_needs_a_round_trip_of_events_per_chunk():
    from benchmarks.ble_upload import stop_and_wait_upload

    link = PacedLink(LinkTiming(interval_ms=15.0, packets_per_event=6), trace=True)
    data = big_table(100)

    async def job() -> tuple[float, float, int]:
        async with LocalBleBand(link=link), BumbleCentral(link=link) as central, BandClient.open(ADDRESS, ble=central.backend) as client:
            loop = asyncio.get_running_loop()
            start = loop.time()
            await client.upload(data)
            windowed = loop.time() - start
            start = loop.time()
            chunks = await stop_and_wait_upload(client, data)
            return windowed, loop.time() - start, chunks

    windowed, stop_and_wait, chunks = run_virtual(job)
    # a write in one event, its acknowledgement in the next, the next write in the one after
    assert stop_and_wait >= 2 * chunks * 0.015
    assert windowed < stop_and_wait / 2


@pytest.mark.parametrize("window_ms", [10.0, 100.0])
def test_scan_windows_pace_discovery(window_ms):
    link = PacedLink(LinkTiming(scan_interval_ms=100.0, scan_window_ms=window_ms))

    async def job() -> list[str | None]:
        async with LocalBleBand(link=link), BumbleCentral(link=link) as central:
            found = await BleakScanner.discover(timeout=3.0, backend=central.scanner_backend)
            return [device.name for device in found]

    assert "HandCue-1A2B" in run_virtual(job)
    heard, missed = link.stats.advertisements_delivered, link.stats.advertisements_missed
    assert heard + missed >= 3.0 / 0.110  # one advertising event per 100 ms + advDelay
    if window_ms < 100.0:  # a 10 % duty cycle hears about one in ten
        assert 0 < heard < missed
    else:
        assert missed == 0


def test_handcue_sim_refuses_bad_pacing_options():
    from click.testing import CliRunner

    from firmware_sim.cli import cli

    bad_interval = CliRunner().invoke(cli, ["--hci-server", "tcp-server:127.0.0.1:1", "--ble-interval", "5ms"])
    assert bad_interval.exit_code == 2 and "multiple of 1.25 ms from 7.5 ms" in bad_interval.output
    without_link = CliRunner().invoke(cli, ["--ble-packets", "6", "--clock", "virtual"])
    assert without_link.exit_code == 1 and "pace the virtual link of --hci-server" in without_link.output


def test_handcue_sim_sets_data_length_and_loss_seed():
    """`--ble-data-length 27 --ble-loss-seed 7` reach the served link's timing; anything but 27 or 251 is refused."""
    from click.testing import CliRunner

    from firmware_sim.cli import _paced_link, cli

    args = ["--hci-server", "tcp-server:127.0.0.1:1", "--ble-interval", "30ms", "--ble-data-length", "27", "--ble-loss", "0.1", "--ble-loss-seed", "7"]
    with cli.make_context("handcue-sim", args) as context:
        link = _paced_link(context.params)["link_factory"]()
    assert (link.timing.interval_ms, link.timing.data_length, link.timing.loss, link.timing.seed) == (30.0, 27, 0.1, 7)
    with cli.make_context("handcue-sim", ["--hci-server", "tcp-server:127.0.0.1:1", "--ble-loss-seed", "3"]) as context:
        assert _paced_link(context.params)["link_factory"]().timing == LinkTiming(seed=3)
    bad = CliRunner().invoke(cli, ["--hci-server", "tcp-server:127.0.0.1:1", "--ble-data-length", "100"])
    assert bad.exit_code == 2 and "'100' is not one of '27', '251'" in bad.output
    without_link = CliRunner().invoke(cli, ["--ble-data-length", "27", "--clock", "virtual"])
    assert without_link.exit_code == 1 and "--ble-data-length" in without_link.output


def test_handcue_sim_paces_its_served_link_across_processes():
    """`handcue-sim --hci-server ... --ble-interval 15ms --ble-packets 6 --phy 2M`: a host in this process uploads through it."""
    port = free_tcp_port()
    sim = subprocess.Popen([sys.executable, "-m", "firmware_sim", "--hci-server", f"tcp-server:127.0.0.1:{port}", "--clock", "virtual",
                            "--ble-interval", "15ms", "--ble-packets", "6", "--phy", "2M", "--ble-loss", "0.05",
                            "--ble-loss-seed", "3", "--ble-data-length", "27"],
                           stdout=subprocess.PIPE, text=True)
    data = big_table(150)
    try:
        assert sim.stdout is not None and sim.stdout.readline().startswith("ble: HandCue-1A2B")

        async def job() -> Any:
            async with BumbleCentral(hci=f"tcp-client:127.0.0.1:{port}") as central, BandClient.open(ADDRESS, ble=central.backend) as client:
                result = await client.upload(data)
                return result, await client.info()

        result, info = asyncio.run(asyncio.wait_for(job(), 60))
    finally:
        sim.terminate()
        if sim.stdout is not None:
            sim.stdout.close()
        assert sim.wait(30) == 0
    assert result.size == len(data) and info.routine_crc32 == zlib.crc32(data)


def record_advertising(link: PacedLink) -> list[float]:
    """The loop times at which ``link`` puts advertising PDUs on the air, filled in as it runs."""
    sent: list[float] = []
    broadcast = link._broadcast_advertising

    def recording(sender: Any, packet: Any) -> None:
        sent.append(asyncio.get_running_loop().time())
        broadcast(sender, packet)

    link._broadcast_advertising = recording  # type: ignore[method-assign]
    return sent


def test_advertising_events_come_every_interval_plus_five_ms_on_average():
    """advDelay is 0-10 ms per event: at the band's fast 20 ms interval, events come every 25 ms on average.

    A timer tick that sends no event (the drift has grown past it) draws no advDelay: one that
    did would add 5 ms to the drift for nothing, and events would come every 26.7 ms.
    """
    link = PacedLink(LinkTiming())
    sent = record_advertising(link)

    async def job() -> None:
        async with LocalBleBand(link=link):
            await asyncio.sleep(20.0)  # within the band's 30 s of fast advertising

    run_virtual(job)
    periods = [b - a for a, b in itertools.pairwise(sent)]
    assert len(periods) > 700 and all(0.020 - EXACT <= p <= 0.030 + EXACT for p in periods)
    assert sum(periods) / len(periods) == pytest.approx(0.025, abs=0.0004)  # standard error about 0.1 ms


def test_legacy_advertising_follows_the_controller_timer():
    """bumble's legacy advertiser ticks every interval_min milliseconds (it reads 0.625 ms units as ms): the link paces those ticks."""
    from bumble.controller import Controller

    link = PacedLink(LinkTiming())
    sent = record_advertising(link)

    async def job() -> None:
        controller = Controller("legacy", link=link)
        advertiser = controller.le_legacy_advertiser
        advertiser.advertising_interval_min = advertiser.advertising_interval_max = 32  # the host asks for 20 ms
        advertiser.start()
        await asyncio.sleep(20.0)
        advertiser.stop()

    run_virtual(job)
    periods = [b - a for a, b in itertools.pairwise(sent)]
    # every tick of the 32 ms timer sends, 0-10 ms late: 37 ms on average (the old reading of 20 ms skipped ticks)
    assert all(0.032 - EXACT <= p <= 0.042 + EXACT for p in periods)
    assert sum(periods) / len(periods) == pytest.approx(0.037, abs=0.0005)


def test_the_data_phase_spans_every_data_frame_and_never_beats_the_link():
    """The "data" phase runs from the first data write (in BEGIN's write, BEGIN being pipelined) to the band's
    confirmation of the last byte: it holds BEGIN's round trip and takes at least the link's physical limit."""
    from benchmarks.ble_upload import limit_seconds
    from companion.phases import Phases

    timing = LinkTiming(interval_ms=15.0, packets_per_event=6, data_length=251, phy="2M")
    link = PacedLink(timing)
    data = big_table(300)

    async def job() -> tuple[Phases, int]:
        async with LocalBleBand(link=link), BumbleCentral(link=link) as central, BandClient.open(ADDRESS, ble=central.backend) as client:
            phases = client.transport.phases = Phases(clock=asyncio.get_running_loop().time)
            await client.upload(data)
            return phases, client.transport.mtu + 3

    phases, mtu = run_virtual(job)
    span = {phase.name: phase for phase in phases.recorded}
    begin, transfer, commit = span["UPLOAD_BEGIN"], span["data"], span["UPLOAD_COMMIT"]
    assert transfer.start <= begin.start and begin.end <= transfer.end <= commit.start
    assert transfer.seconds >= limit_seconds(len(data), mtu, timing)


def test_encrypted_packets_carry_a_mic_on_the_air():
    """Once pairing has encrypted the link (LL_START_ENC_RSP crossed), every non-empty packet is 4 bytes longer on the air."""
    from companion.ble.pairing import pair_band

    link = PacedLink(LinkTiming(interval_ms=15.0), trace=True)
    data = big_table(50)

    async def job() -> None:
        async with LocalBleBand(link=link, pairing_window=60) as local, BumbleCentral(link=link) as central:
            await pair_band(local.name, central.backend)
            async with BandClient.open(ADDRESS, ble=central.backend) as client:
                await client.upload(data)

    run_virtual(job)
    assert link.trace is not None
    # the first packet of an event is on the air from the anchor: its delivery time is its own air time
    firsts = [p for p in link.trace if p.sender == "bleak-central" and not p.lost
              and not any(q.event == p.event and q.anchor == p.anchor and q.delivered_at < p.delivered_at for q in link.trace)]
    plain = [p for p in firsts if p.delivered_at - p.anchor == pytest.approx(air_time_us(p.size, "2M") / 1e6, abs=EXACT)]
    sealed = [p for p in firsts if p.delivered_at - p.anchor == pytest.approx(air_time_us(p.size, "2M", encrypted=True) / 1e6, abs=EXACT)]
    assert plain and sealed and len(plain) + len(sealed) == len(firsts)
    assert firsts[-1] in sealed  # the upload ran on the encrypted link of the bonded reconnection


def test_a_known_bands_status_takes_three_connection_events_from_the_connection(monkeypatch):
    """A band used before (address and GATT handles remembered), on the paced link in virtual time: event 0
    carries the Database Hash read, event 1 its answer, event 2 the subscription's CCCD write with INFO,
    SET_TIME and STATUS behind it (the write commands do not wait for the CCCD write's answer; the band
    handles them in order, so notifications are on before INFO is answered), event 3 every answer."""
    from companion.ble.gatt_cache import MemoryGattCache

    from .address_book import Book

    async def inline(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)  # the GATT cache's worker thread would let virtual time run away

    monkeypatch.setattr(asyncio, "to_thread", inline)

    link = PacedLink(LinkTiming(interval_ms=15.0, packets_per_event=6, phy="2M"), trace=True)
    book = Book()

    async def job() -> tuple[int, float]:
        async with LocalBleBand(link=link) as local, BumbleCentral(link=link, gatt_cache=MemoryGattCache()) as central:
            for _ in range(2):  # the first finds the band by a scan and remembers it; the second is the one measured
                first = len(link.trace or [])
                client = BandClient.open(ADDRESS, ble=central.backend)
                client.transport.address_book = book
                async with client:
                    await client.status()
                    answered = asyncio.get_running_loop().time()
                await asyncio.sleep(0.2)
            assert book.known is not None and local.band is not None
            return first, answered

    first, answered = run_virtual(job)
    trace = (link.trace or [])[first:]
    connection = [packet for packet in trace if packet.kind == "data"]
    start = connection[0]
    assert start.event == 0 and start.sender == "bleak-central"  # the Database Hash read goes in the first event
    events = sorted({packet.event for packet in connection if packet.delivered_at <= answered + EXACT})
    assert events == [0, 1, 2, 3]  # STATUS answered in the fourth event: three intervals after the first
    assert answered - start.anchor < 3 * 0.015 + 0.002
