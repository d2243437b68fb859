"""BLE upload on a paced virtual radio: wall time of the windowed upload vs stop-and-wait, beside the physical limit."""

from __future__ import annotations

import asyncio
import time
import zlib
from typing import Any

from ble_stack.paced_link import LinkTiming, PacedLink, Phy, att_write_fragments
from companion import compile_routine, load_routine
from companion.ble.bumble_backend import BumbleCentral
from companion.client import BandClient
from companion.phases import Phases
from firmware_sim.local import LocalBleBand
from protocol.constants import DEFAULT_UPLOAD_WINDOW, Opcode
from protocol.messages import UploadBeginRequest, UploadCommitRequest, UploadDataRequest
from protocol.table import check_table_header

from . import Report, Row, md_table, ratio
from .probes import AckWaits, Instrumented
from .tables import upload_table

NAME = "ble_upload"
TITLE = "3. BLE upload"
ADDRESS = "ble:HandCue-1A2B"
MTUS = (23, 185, 247)
INTERVALS_MS = (7.5, 15.0, 30.0)
PACKETS_PER_EVENT = 6
PHY: Phy = "2M"
DATA_LENGTH = 251
TARGET_INTERVAL_MS = 15.0
TARGET_MTU = 247
TARGET_FASTER = 4.0
TARGET_OF_LIMIT = 1.3
ROUTINE = "full-hand-massage"
CURVE_SIZES = (512, 1024, 2048, 4096, 8192, 12288, 16384)
NARROW_WINDOW = 8
"""The window bands advertised before firmware 0.2 (the shipped one is DEFAULT_UPLOAD_WINDOW)."""
RUN_TIMEOUT = 600.0
WINDOWED_REPEATS = 3
"""The windowed uploads are short and share the CPU with both hosts: the median of 3 is reported."""
PLOT_PATH = "docs/ble_upload.png"

# Peers' published throughput, for scale (bytes of payload per second).
PEERS = (
    ("SMP (MCUmgr) image upload over BLE, windowed", "10-44 kB/s"),
    ("Nordic DFU from a phone", "about 9 kB/s"),
)
PEERS_BRIEF = f"published: SMP {PEERS[0][1]}, Nordic DFU {PEERS[1][1]}"
IOS_SHORTEST_MS = 15.0
"""iOS grants no connection interval below 15 ms; 7.5 ms is Android's (and some desktops') best."""


def _interval_label(interval_ms: float) -> str:
    return f"{interval_ms:g} ms" + (" (not on iOS)" if interval_ms < IOS_SHORTEST_MS else "")

METHOD = f"""\
In one process, as in `tests/e2e/test_ble_e2e.py`: a simulated band (`firmware_sim.local.LocalBleBand`:
`Band` on a `VirtualClock`, `ProtocolHandler`, the bumble GATT peripheral) and the companion
(`BandClient.open("{ADDRESS}")`, bleak on the bumble backend) are full BLE hosts on a
**`ble_stack.paced_link.PacedLink`**: a bumble `LocalLink` that lets packets cross only at connection
events, at most {PACKETS_PER_EVENT} packets per event and direction, and only while the next exchange (the central's
packet at its real size, T_IFS, the band's packet or empty acknowledgement, T_IFS) still ends within the
interval (so at 7.5 ms six 189-byte packets fit but five 251-byte ones), data length {DATA_LENGTH}, {PHY} PHY air
time, no loss, no encryption. The connection interval is set by the link (the central's
platform decides it on a real phone: 15 ms at best on iOS, 30-50 ms common on Android and desktops).

For each interval ({", ".join(f"{i:g}" for i in INTERVALS_MS)} ms) and ATT MTU ({", ".join(map(str, MTUS))}; the benchmark sets
the central with `BumbleCentral(link=..., att_mtu=MTU)` and checks `client.transport.mtu` = MTU - 3), on one
connection: the **windowed** upload (`BandClient.upload`: up to `window` unacknowledged UPLOAD_DATA
frames, window {DEFAULT_UPLOAD_WINDOW} from the band's INFO; UPLOAD_BEGIN, the first window of data and, behind the last
frame, UPLOAD_COMMIT sent without waiting for answers, BEGIN and COMMIT in the writes of the first and last
data frames, SPEC §19.2) and a **stop-and-wait** upload (one
`BandClient.request(Opcode.UPLOAD_DATA, ...)` at a time, each awaited before the next: one round trip per
frame; SMP clients such as smpclient also wait for each chunk's answer, but an SMP chunk can span many
ATT writes per round trip, while a HandCue frame of at most 256 bytes cannot), both with the chunk size `BandClient.upload` uses, of an 8 KiB synthetic table and of the
shipped `{ROUTINE}` routine. Wall time is from the call to its return (BEGIN, data, COMMIT); the windowed uploads are the median of
{WINDOWED_REPEATS} (they are short and CPU-bound at short intervals), stop-and-wait one run (bound by the link).
*Data phase*: from the first data write until the band has confirmed the last byte (the phase `BandClient.upload`
records as "data"; its first data frame rides in UPLOAD_BEGIN's write, so BEGIN's round trip lies inside it;
stop-and-wait: from BEGIN's answer, when its first data frame goes, to the start of UPLOAD_COMMIT). It cannot
be shorter than the physical limit; what it adds beyond it is the wait for the first connection event and the
band's last acknowledgement.

**Physical limit**: the time the table's bytes need on this link at this MTU: ATT writes of at most MTU - 3
bytes of value, each an L2CAP PDU of MTU + 4 bytes (3-byte ATT and 4-byte L2CAP header) cut into
`ceil((MTU + 4) / {DATA_LENGTH})` link packets, filled into whole connection events by the rule the link itself
uses (`LinkTiming.plan_event`: at most {PACKETS_PER_EVENT}, while the next exchange ends within the interval).
No protocol can beat it with these parameters (`tests/e2e/test_paced_link.py` checks that the link carries
such writes in exactly that many events). On top come the HandCue framing (COBS, request header, offset: 36 writes instead of
34 for 8 KiB at MTU 247), the wait for the first connection event (the upload starts just after one here,
as after a connect: most of an interval), and UPLOAD_COMMIT's answer: UPLOAD_BEGIN and UPLOAD_COMMIT ride in
the writes of the first and last data frames, so COMMIT's answer leaves at the event after the last data
when the band has verified the table by then, else one event later (the last write arrives about 8 ms into
a 15 ms event). The simulated band decodes each record as its bytes arrive (`protocol.table.RecordCache`), so
its check at COMMIT (`Storage.commit`: CRC, the rest of `decode_table`, the journal entry) is short; the
benchmark times it on the band and prints it beside the target figure (*band's COMMIT check*, median).

**Host CPU**: both BLE hosts (bumble, in Python) and both protocol ends share one process and one core;
the same upload on an unpaced `LocalLink` shows that CPU time (row *unpaced*), which the paced link
cannot go below. Also measured: the windowed upload with the band advertising a window of {NARROW_WINDOW}
frames (`ProtocolHandler.window`, as firmware 0.1 did) instead of {DEFAULT_UPLOAD_WINDOW}, to show what the window costs. The plot sweeps the table
size at {TARGET_INTERVAL_MS:g} ms and MTU {TARGET_MTU}.

Targets at {TARGET_INTERVAL_MS:g} ms and MTU {TARGET_MTU}, 8 KiB: windowed at least {TARGET_FASTER:g}x faster than
stop-and-wait in wall time, and within {TARGET_OF_LIMIT:g}x of the physical limit."""


def timing_for(interval_ms: float) -> LinkTiming:
    return LinkTiming(interval_ms=interval_ms, packets_per_event=PACKETS_PER_EVENT, data_length=DATA_LENGTH, phy=PHY)


def limit_seconds(size: int, mtu: int, timing: LinkTiming) -> float:
    """Least time for ``size`` payload bytes in ATT writes of MTU - 3 bytes on this link.

    Each write is an L2CAP PDU of MTU + 4 bytes (4-byte L2CAP and 3-byte ATT header around
    MTU - 3 bytes of value, the last write shorter), cut into link packets of the data length;
    :meth:`LinkTiming.limit_seconds` fills connection events with them by the rule the link uses.
    """
    return timing.limit_seconds(att_write_fragments(size, mtu, timing.data_length))


def packets_per_event(mtu: int, timing: LinkTiming) -> int:
    """Packets of a full ATT write's size (its largest link packet) that go in one event."""
    return timing.packets_that_fit(max(att_write_fragments(mtu - 3, mtu, timing.data_length)))


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


async def _timed(client: BandClient, probe: Instrumented, local: LocalBleBand, data: bytes, stop_and_wait: bool) -> dict[str, Any]:
    probe.reset()
    phases = client.transport.phases = Phases()
    events_before = local.link.stats.events if isinstance(local.link, PacedLink) else 0
    storage = local.band.storage
    commit, commit_checks = storage.commit, []

    def timed_commit() -> bytes:
        began = time.perf_counter()
        try:
            return commit()
        finally:
            commit_checks.append(time.perf_counter() - began)

    storage.commit = timed_commit  # type: ignore[method-assign]
    try:
        with AckWaits() as waits:
            retries_before = client.retries
            start = time.perf_counter()
            if stop_and_wait:  # its requests go again through the client's timer, which counts them
                frames = await stop_and_wait_upload(client, data)
                retransmissions = client.retries - retries_before
            else:
                result = await client.upload(data)
                frames, retransmissions = result.frames_sent, result.retransmissions
            wall = time.perf_counter() - start
    finally:
        del storage.commit  # the method again, also when the upload failed
    if local.band.storage.active_table() != data:
        raise RuntimeError("the band does not hold the uploaded table")
    if stop_and_wait:
        _, begin_end = probe.span(Opcode.UPLOAD_BEGIN)
        commit_start, commit_end = probe.span(Opcode.UPLOAD_COMMIT)
        data_s, commit_s = commit_start - begin_end, commit_end - commit_start
    else:  # BandClient.upload records its phases: "data" from the first data write (with BEGIN) to the last byte confirmed
        data_s, commit_s = phases.total("data"), phases.total("UPLOAD_COMMIT")
    events = (local.link.stats.events - events_before) if isinstance(local.link, PacedLink) else 0
    return {"wall_s": wall, "data_s": data_s, "commit_s": commit_s, "frames": frames,
            "retransmissions": retransmissions, "packets_up": probe.packets_sent, "packets_down": probe.packets_received,
            "bytes_up": probe.sent, "bytes_down": probe.received, "max_in_flight": waits.max_in_flight, "events": events,
            "band_commit_s": sum(commit_checks)}


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall time, with every run's wall time beside it."""
    chosen = sorted(runs, key=lambda run: run["wall_s"])[len(runs) // 2]
    return {**chosen, "wall_runs_s": [run["wall_s"] for run in runs], "band_commit_runs_s": [run["band_commit_s"] for run in runs]}


async def _measure_link(interval_ms: float | None, mtu: int, tables: dict[str, bytes], *, stop_and_wait: bool = True,
                        window: int | None = None) -> dict[str, Any]:
    """All uploads for one link configuration (``interval_ms`` None: bumble's unpaced LocalLink) on one connection."""
    link = PacedLink(timing_for(interval_ms)) if interval_ms is not None else None
    async with LocalBleBand(link=link) as local, BumbleCentral(link=local.link, att_mtu=mtu) as central:
        if window is not None:
            local.handler.window = window
        client = BandClient.open(ADDRESS, ble=central.backend)
        probe = Instrumented(client)
        connect_start = time.perf_counter()
        async with client:
            connect_s = time.perf_counter() - connect_start
            negotiated = client.transport.mtu
            if negotiated != mtu - 3:
                raise RuntimeError(f"requested ATT MTU {mtu}, but client.transport.mtu is {negotiated} (expected {mtu - 3})")
            uploads: dict[str, dict[str, Any]] = {}
            for name, data in tables.items():
                uploads[name] = {"bytes": len(data), "windowed": _median_run([await _timed(client, probe, local, data, False)
                                                                               for _ in range(WINDOWED_REPEATS)])}
                if stop_and_wait:
                    uploads[name]["stop_and_wait"] = await _timed(client, probe, local, data, True)
    return {"interval_ms": interval_ms, "mtu": mtu, "transport_mtu": negotiated, "window": window or local.handler.window,
            "connect_s": connect_s, "uploads": uploads}


async def _measure(intervals: tuple[float, ...], mtus: tuple[int, ...], tables: dict[str, bytes], curve: tuple[int, ...],
                   extras: bool) -> dict[str, Any]:
    results: dict[str, Any] = {"grid": [], "curve": None, "unpaced": None, "wide": None}
    for interval in intervals:
        for mtu in mtus:
            results["grid"].append(await asyncio.wait_for(_measure_link(interval, mtu, tables), RUN_TIMEOUT))
    if extras:
        target = {"8 KiB": tables["8 KiB"]} if "8 KiB" in tables else dict(list(tables.items())[:1])
        results["unpaced"] = await asyncio.wait_for(_measure_link(None, TARGET_MTU, target), RUN_TIMEOUT)
        results["wide"] = [await asyncio.wait_for(_measure_link(interval, TARGET_MTU, target, stop_and_wait=False, window=NARROW_WINDOW),
                                                  RUN_TIMEOUT) for interval in intervals]
    if curve:
        sized = {f"{size} B": upload_table(size) for size in curve}
        results["curve"] = await asyncio.wait_for(_measure_link(TARGET_INTERVAL_MS, TARGET_MTU, sized), RUN_TIMEOUT)
    return results


def _kbps(size: int, seconds: float) -> str:
    return f"{size / seconds / 1000:.1f} kB/s"


def plot(curve: dict[str, Any], path: str) -> str | None:
    """Upload time vs table size at the target link: windowed, stop-and-wait, the limit. Returns the path written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from . import REPO

    timing = timing_for(TARGET_INTERVAL_MS)
    uploads = sorted(curve["uploads"].values(), key=lambda u: u["bytes"])
    sizes = [u["bytes"] / 1024 for u in uploads]
    limits = [limit_seconds(u["bytes"], TARGET_MTU, timing) for u in uploads]
    # The limit is a step function of the size (whole connection events): drawn at every 16 bytes, as steps.
    fine = list(range(16, uploads[-1]["bytes"] + 1, 16))
    fig, (ax, rel) = plt.subplots(2, 1, figsize=(6.4, 6.0), dpi=100, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    ax.plot(sizes, [u["stop_and_wait"]["wall_s"] for u in uploads], "o-", label="stop-and-wait (one round trip per chunk)")
    ax.plot(sizes, [u["windowed"]["wall_s"] for u in uploads], "s-", label=f"windowed (window {curve['window']})")
    ax.plot([size / 1024 for size in fine], [limit_seconds(size, TARGET_MTU, timing) for size in fine], "k-", drawstyle="steps-post",
            linewidth=1, label="physical limit (payload only, whole connection events)")
    ax.set_yscale("log")
    ax.set_ylabel("upload wall time (s, log scale)")
    ax.set_title(f"BLE upload on the paced link\n{timing.describe()}, ATT MTU {TARGET_MTU}", fontsize=8)  # two lines: it fits the width
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    rel.plot(sizes, [u["stop_and_wait"]["wall_s"] / limit for u, limit in zip(uploads, limits, strict=True)], "o-", label="stop-and-wait / limit")
    rel.plot(sizes, [u["windowed"]["wall_s"] / limit for u, limit in zip(uploads, limits, strict=True)], "s-", label="windowed / limit")
    rel.axhline(1.0, color="k", linewidth=1)
    rel.axhline(TARGET_OF_LIMIT, color="k", linestyle=":", linewidth=1, label=f"target: {TARGET_OF_LIMIT:g}x the limit")
    rel.set_yscale("log")
    rel.set_xlabel("table size (KiB)")
    rel.set_ylabel("wall time / limit (log scale)")
    rel.grid(True, which="both", alpha=0.3)
    rel.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(REPO / path, metadata={"Software": None})
    plt.close(fig)
    return path


def run(*, intervals: tuple[float, ...] = INTERVALS_MS, mtus: tuple[int, ...] = MTUS, table_bytes: int = 8192,
        routine: str | None = ROUTINE, curve: tuple[int, ...] = CURVE_SIZES, extras: bool = True, plot_path: str | None = PLOT_PATH) -> Report:
    tables = {"8 KiB" if table_bytes == 8192 else f"{table_bytes} B": upload_table(table_bytes)}
    if routine:
        tables[routine] = compile_routine(load_routine(routine))
    results = asyncio.run(_measure(intervals, mtus, tables, curve, extras))
    rows: list[Row] = []
    body = []
    for config in results["grid"]:
        timing = timing_for(config["interval_ms"])
        for name, upload in config["uploads"].items():
            w, s = upload["windowed"], upload["stop_and_wait"]
            limit = limit_seconds(upload["bytes"], config["mtu"], timing)
            faster = s["wall_s"] / w["wall_s"]
            body.append([_interval_label(config["interval_ms"]), config["mtu"], packets_per_event(config["mtu"], timing), name, upload["bytes"],
                         f"{s['wall_s'] * 1000:.0f} ms", f"{w['wall_s'] * 1000:.0f} ms", ratio(faster), f"{limit * 1000:.0f} ms",
                         ratio(w["wall_s"] / limit), ratio(w["data_s"] / limit), f"{w['commit_s'] * 1000:.1f} ms", _kbps(upload["bytes"], w["wall_s"]),
                         w["frames"]])
            if name == next(iter(tables)) and not (config["interval_ms"] == TARGET_INTERVAL_MS and config["mtu"] == TARGET_MTU):
                rows.append(Row(f"{name} @ {_interval_label(config['interval_ms'])}, MTU {config['mtu']}: windowed / stop-and-wait / limit",
                                f"{w['wall_s'] * 1000:.0f} / {s['wall_s'] * 1000:.0f} / {limit * 1000:.0f} ms ({ratio(faster)} faster, "
                                f"{ratio(w['wall_s'] / limit)} the limit; windowed {_kbps(upload['bytes'], w['wall_s'])}, {PEERS_BRIEF})"))
            if config["interval_ms"] == TARGET_INTERVAL_MS and config["mtu"] == TARGET_MTU:
                label = f"{name} @ {TARGET_INTERVAL_MS:g} ms, MTU {TARGET_MTU}"
                checked = name == next(iter(tables))
                rows.append(Row(f"{label}: stop-and-wait / windowed", f"{s['wall_s'] * 1000:.0f} ms / {w['wall_s'] * 1000:.0f} ms ({ratio(faster)} faster)",
                                f">= {TARGET_FASTER:g}x" if checked else "", faster >= TARGET_FASTER if checked else None))
                if checked:
                    rows.append(Row(f"{label}: throughput windowed / stop-and-wait / physical limit",
                                    f"{_kbps(upload['bytes'], w['wall_s'])} / {_kbps(upload['bytes'], s['wall_s'])} / {_kbps(upload['bytes'], limit)} "
                                    f"({PEERS_BRIEF})"))
                band_check = sorted(w["band_commit_runs_s"])[len(w["band_commit_runs_s"]) // 2]
                rows.append(Row(f"{label}: windowed / physical limit", f"{w['wall_s'] * 1000:.0f} ms / {limit * 1000:.0f} ms ({ratio(w['wall_s'] / limit)}; "
                                f"data phase {ratio(w['data_s'] / limit)}; band's COMMIT check {band_check * 1000:.1f} ms)",
                                f"<= {TARGET_OF_LIMIT:g}x" if checked else "",
                                w["wall_s"] / limit <= TARGET_OF_LIMIT if checked else None))
    header = ["interval", "ATT MTU", "packets/event", "table", "bytes", "stop-and-wait", "windowed", "windowed faster by", "physical limit",
              "windowed / limit", "data phase / limit", "COMMIT's answer after the data", f"windowed throughput ({PEERS_BRIEF})", "frames"]
    details = (f"Link: {PACKETS_PER_EVENT} packets per event (as many as fit in the interval at their real size: *packets/event* is for "
               f"full writes of that MTU), data length {DATA_LENGTH}, {PHY} PHY, no loss; window {results['grid'][0]['window']} frames. "
               f"Windowed: median of {WINDOWED_REPEATS}; stop-and-wait: one run. Intervals below {IOS_SHORTEST_MS:g} ms are Android's "
               "(and some desktops'): iOS does not grant them.\n\n" + md_table(header, body))
    notes: list[str] = []
    connects = [[f"{c['interval_ms']:g} ms", c["mtu"], f"{c['connect_s'] * 1000:.0f} ms"] for c in results["grid"]]
    details += ("\n\nConnecting (scan, connect, MTU exchange, discovery of the HandCue service only: its characteristics and the "
                "descriptors of those that notify; subscription), measured around `BandClient.__aenter__` on the same link:\n\n"
                + md_table(["interval", "ATT MTU", "connect"], connects))
    if results["unpaced"] is not None and results["wide"] is not None:
        [(name, unpaced)] = results["unpaced"]["uploads"].items()
        extra = []
        for wide_config in results["wide"]:
            interval = wide_config["interval_ms"]
            limit = limit_seconds(unpaced["bytes"], TARGET_MTU, timing_for(interval))
            [wide] = wide_config["uploads"].values()
            shipped = next((c["uploads"][name]["windowed"]["wall_s"] for c in results["grid"]
                            if c["interval_ms"] == interval and c["mtu"] == TARGET_MTU), float("nan"))
            for label, seconds in ((f"windowed, window {DEFAULT_UPLOAD_WINDOW} (as shipped)", shipped),
                                   (f"windowed, window {NARROW_WINDOW} (firmware 0.1)", wide["windowed"]["wall_s"])):
                extra.append([f"{interval:g} ms", label, f"{seconds * 1000:.0f} ms", f"{limit * 1000:.0f} ms", ratio(seconds / limit)])
            if interval == TARGET_INTERVAL_MS:
                rows.append(Row(f"{name} @ {interval:g} ms, MTU {TARGET_MTU}: window {NARROW_WINDOW} instead of {DEFAULT_UPLOAD_WINDOW}",
                                f"{wide['windowed']['wall_s'] * 1000:.0f} ms ({ratio(wide['windowed']['wall_s'] / limit)} the limit)"))
        limit = limit_seconds(unpaced["bytes"], TARGET_MTU, timing_for(TARGET_INTERVAL_MS))
        extra.append(["unpaced", f"windowed, window {DEFAULT_UPLOAD_WINDOW}: host CPU only", f"{unpaced['windowed']['wall_s'] * 1000:.0f} ms",
                      f"{limit * 1000:.0f} ms (15 ms)", ratio(unpaced["windowed"]["wall_s"] / limit)])
        extra.append(["unpaced", "stop-and-wait: host CPU only", f"{unpaced['stop_and_wait']['wall_s'] * 1000:.0f} ms", f"{limit * 1000:.0f} ms (15 ms)",
                      ratio(unpaced["stop_and_wait"]["wall_s"] / limit)])
        details += (f"\n\nWhere the rest goes ({name}, MTU {TARGET_MTU}): the shipped window and the narrower one of firmware 0.1, "
                    "beside the host CPU time of the same upload on bumble's unpaced LocalLink:\n\n"
                    + md_table(["interval", "upload", "wall time", "physical limit", "/ limit"], extra))
        rows.append(Row(f"{name} @ MTU {TARGET_MTU}: host CPU alone (unpaced LocalLink), windowed",
                        f"{unpaced['windowed']['wall_s'] * 1000:.0f} ms ({ratio(unpaced['windowed']['wall_s'] / limit)} the {TARGET_INTERVAL_MS:g} ms limit)"))
    peers = [[who, figure] for who, figure in PEERS]
    large = [(u["windowed"]["wall_s"], u["bytes"], c, u) for c in results["grid"] for u in c["uploads"].values() if u["bytes"] >= 4096]
    # Phones are the peers' figures: the best HandCue figure at an interval iOS grants first, then the best at any.
    for chosen, where in ((min((x for x in large if x[2]["interval_ms"] >= IOS_SHORTEST_MS), default=None, key=lambda x: x[0]),
                           f"at {IOS_SHORTEST_MS:g} ms or longer, as iOS and Android grant"),
                          (min(large, default=None, key=lambda x: x[0]), "at any interval of this run")):
        if chosen is None or (where.startswith("at any") and chosen[2]["interval_ms"] >= IOS_SHORTEST_MS):
            continue  # the best of the run is already shown (an interval iOS grants)
        seconds, size, config, upload = chosen
        ios = "" if config["interval_ms"] >= IOS_SHORTEST_MS else ", an interval iOS does not grant"
        peers.append([f"HandCue windowed, best {where} ({config['interval_ms']:g} ms{ios}, MTU {config['mtu']}, simulated link)",
                      _kbps(size, seconds)])
        peers.append(["HandCue stop-and-wait, same link", _kbps(size, upload["stop_and_wait"]["wall_s"])])
    details += "\n\nFor scale, peers' published figures (payload throughput; real radios and phones):\n\n" + md_table(["upload", "throughput"], peers, "ll")
    if results["curve"] is not None:
        path = plot(results["curve"], plot_path) if plot_path else None
        timing = timing_for(TARGET_INTERVAL_MS)
        sweep = [[u["bytes"], f"{u['stop_and_wait']['wall_s'] * 1000:.0f} ms", f"{u['windowed']['wall_s'] * 1000:.0f} ms",
                  f"{limit_seconds(u['bytes'], TARGET_MTU, timing) * 1000:.0f} ms", ratio(u["stop_and_wait"]["wall_s"] / u["windowed"]["wall_s"])]
                 for u in sorted(results["curve"]["uploads"].values(), key=lambda u: u["bytes"])]
        details += (f"\n\nUpload time against table size ({timing.describe()}, MTU {TARGET_MTU}):\n\n"
                    + md_table(["bytes", "stop-and-wait", "windowed", "physical limit", "windowed faster by"], sweep))
        if path:
            details += f"\n\n![Upload time against table size]({path.removeprefix('docs/')})"
    return Report(NAME, TITLE, METHOD, rows, details, notes, data={"tables": {k: len(v) for k, v in tables.items()}, **results})
