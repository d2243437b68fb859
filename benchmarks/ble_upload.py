"""BLE upload: round trips and wall time of the windowed upload vs stop-and-wait at ATT MTU 23, 185 and 247."""

from __future__ import annotations

import asyncio
import math
import time
import zlib
from typing import Any

from companion import compile_routine, load_routine
from companion.ble.bumble_backend import BumbleCentral
from companion.client import BandClient
from firmware_sim.local import LocalBleBand
from protocol.constants import Opcode
from protocol.messages import UploadBeginRequest, UploadCommitRequest, UploadDataRequest
from protocol.table import check_table_header

from . import Report, Row, md_table, ratio
from .probes import AckWaits, Instrumented
from .tables import upload_table

NAME = "ble_upload"
TITLE = "3. BLE upload"
ADDRESS = "ble:HandCue-1A2B"
MTUS = (23, 185, 247)
TARGET_MTU = 247
TARGET_FEWER = 5.0
CONNECTION_INTERVAL_MS = 15.0
INTERVALS_PER_ROUND_TRIP = 2
PACKETS_PER_EVENT = 4
ROUND_TRIP_MS = INTERVALS_PER_ROUND_TRIP * CONNECTION_INTERVAL_MS
MAX_FRAMES_PER_ROUND_TRIP = INTERVALS_PER_ROUND_TRIP * PACKETS_PER_EVENT
RUN_TIMEOUT = 180.0

METHOD = f"""\
In one process, as in `tests/test_ble_e2e.py`: a simulated band (`firmware_sim.band.Band` on a
`VirtualClock`, `ProtocolHandler`, `firmware_sim.ble.BlePeripheral`) on a `bumble.link.LocalLink`,
and a `companion.ble.bumble_backend.BumbleCentral(link=...)` on the same link, so that
`BandClient.open("{ADDRESS}", ble=central.backend)` runs bleak on bumble. Both sides are full BLE hosts; only the radio is virtual, and the LocalLink has
**no connection-interval timing**, so its wall times are host-stack CPU time, not air time.

To force an ATT MTU the benchmark makes the central with `att_mtu=MTU` (the MTU it requests
right after connecting; the band accepts up to 247), and checks
the negotiated value: `client.transport.mtu` must be MTU - 3. For each MTU, on one connection
and after a warm-up upload of a shipped routine: the **windowed** upload
(`BandClient.upload`: up to `window` unacknowledged UPLOAD_DATA frames, window from the band's
UPLOAD_BEGIN answer) and a **stop-and-wait** upload written in the benchmark (UPLOAD_BEGIN, then
one `BandClient.request(UploadDataRequest(...))` at a time, each awaited before the next, as
SMP/smpclient does, then UPLOAD_COMMIT), both with the chunk size `BandClient.upload` uses (the
largest whose frame fits one ATT write of MTU - 3 bytes) and the same 8 KiB table.

**Round trips.** Stop-and-wait: one per chunk, plus UPLOAD_BEGIN and UPLOAD_COMMIT. Windowed:
`ceil(frames / window)` plus BEGIN and COMMIT, i.e. one round trip carries a full window. The
benchmark checks that the client really keeps `window` frames in flight (it counts the
`asyncio.wait` calls of `BandClient.upload` and the most frames awaited at once). On the
LocalLink an acknowledgement comes back before the next one, so every wait returns after one
acknowledgement and refills one frame: the number of waits equals the number of frames and
says nothing about round trips on a radio, where the round trip is long and a whole window is
on the air in it.

**Link model** for converting round trips into time: connection interval {CONNECTION_INTERVAL_MS:g} ms; one round
trip (a write in one connection event, its acknowledgement notified in the next, the next
write after that) = {INTERVALS_PER_ROUND_TRIP} connection intervals = {ROUND_TRIP_MS:g} ms; each frame is one ATT packet (the
client sizes frames to one write; ATT MTU <= 247 fits one LE data PDU of 251 bytes with data
length extension); at most {PACKETS_PER_EVENT} packets per connection event in each direction, so at most
{MAX_FRAMES_PER_ROUND_TRIP} frames per round trip. Model time = (2 + ceil(frames / min(window, {MAX_FRAMES_PER_ROUND_TRIP}))) x {ROUND_TRIP_MS:g} ms for
the windowed upload and (2 + chunks) x {ROUND_TRIP_MS:g} ms for stop-and-wait. It leaves out the band's
commit time (measured separately: *COMMIT*) and retransmissions (none occurred). Packets and bytes
are counted at the transport: ATT write values sent and notification values received (without
the ATT, L2CAP and link-layer headers).
Target: at MTU {TARGET_MTU}, at least {TARGET_FEWER:g}x fewer round trips than stop-and-wait."""


LocalBand = LocalBleBand


async def stop_and_wait_upload(client: BandClient, data: bytes) -> int:
    """Upload ``data`` one acknowledged chunk at a time; returns the number of chunks."""
    check_table_header(data)
    begin = await client.request(UploadBeginRequest(length=len(data), crc32=zlib.crc32(data)))
    chunk = client._chunk_size(begin.max_chunk)  # the same chunking as BandClient.upload
    offset, chunks = begin.offset, 0
    while offset < len(data):
        piece = data[offset : offset + chunk]
        acked = (await client.request(UploadDataRequest(offset=offset, data=piece))).offset
        if acked != offset + len(piece):
            raise RuntimeError(f"band acknowledged offset {acked}, expected {offset + len(piece)}")
        offset, chunks = acked, chunks + 1
    await client.request(UploadCommitRequest(), timeout=client.commit_timeout)
    return chunks


def model_ms(frames: float, per_round_trip: int) -> float:
    return (2 + math.ceil(frames / per_round_trip)) * ROUND_TRIP_MS


async def _measure_mtu(mtu: int, data: bytes, warm_up: bytes | None) -> dict[str, Any]:
    async with LocalBand() as local, BumbleCentral(link=local.link, att_mtu=mtu) as central:
        window = local.handler.window
        client = BandClient.open(ADDRESS, ble=central.backend)
        probe = Instrumented(client)
        async with client:
            negotiated = client.transport.mtu
            if negotiated != mtu - 3:
                raise RuntimeError(f"requested ATT MTU {mtu}, but client.transport.mtu is {negotiated} (expected {mtu - 3})")
            if warm_up is not None:
                await client.upload(warm_up)

            probe.reset()
            with AckWaits() as waits:
                start = time.perf_counter()
                result = await client.upload(data)
                windowed_s = time.perf_counter() - start
            windowed = {"wall_s": windowed_s, "frames": result.frames_sent, "retransmissions": result.retransmissions,
                        "commit_s": _span(probe, Opcode.UPLOAD_COMMIT), "packets_up": probe.packets_sent, "packets_down": probe.packets_received,
                        "bytes_up": probe.sent, "bytes_down": probe.received, "waits": waits.calls, "blocked": waits.blocked,
                        "max_in_flight": waits.max_in_flight}

            probe.reset()
            start = time.perf_counter()
            chunks = await stop_and_wait_upload(client, data)
            saw_s = time.perf_counter() - start
            stop_and_wait = {"wall_s": saw_s, "frames": chunks, "requests": probe.count(Opcode.UPLOAD_DATA),
                             "commit_s": _span(probe, Opcode.UPLOAD_COMMIT), "packets_up": probe.packets_sent,
                             "packets_down": probe.packets_received, "bytes_up": probe.sent, "bytes_down": probe.received}
            if local.band.storage.active_table() != data:
                raise RuntimeError("the band does not hold the uploaded table")
    chunk_payload = len(data) / windowed["frames"]
    per_round_trip = min(window, MAX_FRAMES_PER_ROUND_TRIP)
    windowed["round_trips"] = 2 + math.ceil(windowed["frames"] / window)
    windowed["model_ms"] = model_ms(windowed["frames"], per_round_trip)
    stop_and_wait["round_trips"] = 2 + stop_and_wait["frames"]
    stop_and_wait["model_ms"] = model_ms(stop_and_wait["frames"], 1)
    return {"mtu": mtu, "transport_mtu": negotiated, "window": window, "chunk": round(chunk_payload), "windowed": windowed, "stop_and_wait": stop_and_wait}


def _span(probe: Instrumented, opcode: Opcode) -> float:
    start, end = probe.span(opcode)
    return end - start


async def _measure(mtus: tuple[int, ...], data: bytes, warm_up: bytes | None) -> list[dict[str, Any]]:
    return [await asyncio.wait_for(_measure_mtu(mtu, data, warm_up), RUN_TIMEOUT) for mtu in mtus]


def run(*, mtus: tuple[int, ...] = MTUS, table_bytes: int = 8192, warm_up: str | None = "nausea-pc6") -> Report:
    data = upload_table(table_bytes)
    results = asyncio.run(_measure(mtus, data, compile_routine(load_routine(warm_up)) if warm_up else None))
    rows: list[Row] = []
    body = []
    for r in results:
        w, s = r["windowed"], r["stop_and_wait"]
        fewer = s["round_trips"] / w["round_trips"]
        checked = r["mtu"] == TARGET_MTU
        rows.append(Row(f"MTU {r['mtu']}: round trips windowed / stop-and-wait", f"{w['round_trips']} / {s['round_trips']} ({ratio(fewer)} fewer)",
                        f">= {TARGET_FEWER:g}x fewer" if checked else "", fewer >= TARGET_FEWER if checked else None))
        rows.append(Row(f"MTU {r['mtu']}: model time @ {CONNECTION_INTERVAL_MS:g} ms CI, windowed / stop-and-wait",
                        f"{w['model_ms'] / 1000:.2f} s / {s['model_ms'] / 1000:.2f} s"))
        rows.append(Row(f"MTU {r['mtu']}: LocalLink wall time windowed / stop-and-wait", f"{w['wall_s'] * 1000:.0f} ms / {s['wall_s'] * 1000:.0f} ms"))
        for label, x in (("windowed", w), ("stop-and-wait", s)):
            body.append([r["mtu"], r["transport_mtu"], r["chunk"], label, x["frames"], x["round_trips"], f"{x['model_ms'] / 1000:.2f} s",
                         f"{x['wall_s'] * 1000:.0f} ms", f"{x['commit_s'] * 1000:.0f} ms", x["packets_up"], x["packets_down"], x["bytes_up"],
                         x["bytes_down"], f"{len(data) / x['packets_up']:.1f}"])
    header = ["ATT MTU", "transport.mtu", "data/frame", "upload", "frames", "round trips", "model time", "LocalLink wall", "COMMIT",
              "packets up", "packets down", "bytes up", "bytes down", "table bytes/packet up"]
    details = f"{len(data)}-byte table, window {results[0]['window']} frames:\n\n" + md_table(header, body)
    waits = [[r["mtu"], r["windowed"]["frames"], r["windowed"]["waits"], r["windowed"]["blocked"], r["windowed"]["max_in_flight"], r["window"]]
             for r in results]
    details += ("\n\nAcknowledgement waits of the windowed upload on the LocalLink (see the method: one wait per frame here, "
                "because acknowledgements return one at a time; *max in flight* shows the window is used):\n\n"
                + md_table(["ATT MTU", "frames", "ack waits", "of which blocked", "max in flight", "window"], waits))
    notes = []
    for r in results:
        w, s = r["windowed"], r["stop_and_wait"]
        notes.append(f"MTU {r['mtu']}: {r['chunk']} table bytes per frame; {len(data)} table bytes in {w['packets_up']} ATT writes of at most "
                     f"{r['transport_mtu']} bytes ({len(data) / w['packets_up']:.0f} per write, BEGIN and COMMIT included); data phase alone: "
                     f"{s['frames']} vs {w['round_trips'] - 2} round trips ({s['frames'] / (w['round_trips'] - 2):.1f}x fewer).")
    return Report(NAME, TITLE, METHOD, rows, details, notes, data={"table_bytes": len(data), "mtus": results})
