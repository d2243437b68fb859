"""Serial upload: wall time of BandClient.upload through a `handcue-sim` pty paced to 115200 and 9600 baud,
clean and through a cable that corrupts bytes (goodput as a fraction of the clean run)."""

from __future__ import annotations

import asyncio
import time
import zlib
from typing import Any

from companion import compile_routine, load_routine
from companion.client import BandClient
from companion.phases import Phases

from . import Report, Row, md_table, median, ratio
from .probes import Instrumented
from .sim_process import SimProcess
from .tables import upload_table

NAME = "serial_upload"
TITLE = "2. Serial upload"
BAUD = 115200
SLOW_BAUD = 9600
CORRUPT = 0.001
BITS_PER_BYTE = 10  # start + 8 data + stop, as the simulator paces its pty
TARGET_RATIO = 1.15
SIM_START_TIMEOUT = 20.0
UPLOAD_TIMEOUT = 60.0

METHOD = f"""\
`handcue-sim --serial pty --baud {BAUD} --clock virtual` runs as a subprocess; the benchmark reads
its `serial: PATH` line and opens `BandClient.open("serial:PATH?baud={BAUD}")` (pyserial on the
pty). The simulator paces both directions of the pty to the wire time of {BAUD} baud at
{BITS_PER_BYTE} bits per byte. Uploaded: a synthetic table of STEP records built with
`protocol.table` (8192 bytes, no names) and the shipped `full-hand-massage` compiled as `handcue
upload` sends it (`names=True`). Each table is uploaded several times on one connection, one
after the other; each upload is timed from the call of `BandClient.upload(data)` to its
return, so it includes UPLOAD_BEGIN, the windowed data frames and UPLOAD_COMMIT (the band
verifies and stores the table, then loads it). The **wire-time limit** is `table bytes x
{BITS_PER_BYTE} / {BAUD}` s, the time the bare table needs on the wire; the ratio is wall time / limit.
The benchmark also counts the bytes really written to and read from the port during the upload
(frames with COBS and CRC, acknowledgements, the status notification after the commit) by
wrapping the transport's `send`/`receive`, and times the phases by wrapping
`BandClient.request` (UPLOAD_BEGIN and UPLOAD_COMMIT go through it; data frames do not).
Target: 8 KiB table within {TARGET_RATIO}x of the wire-time limit, at {BAUD} and at {SLOW_BAUD} baud.

**Noisy link.** The same 8 KiB uploads go through the simulator's own fault injection:
`handcue-sim --faults corrupt={CORRUPT} --fault-seed N` (`firmware_sim.link_faults.LinkFaults` on its
`PtySerialPort`), which corrupts each byte with probability {CORRUPT} in each direction (XOR with a
random non-zero byte, seeded so a run replays), after the pacing: it adds no delay of its own.
**Goodput** = table bytes / wall time, reported as a fraction of the clean run's at the same baud
rate (median of both)."""


class SerialSim(SimProcess):
    """A `handcue-sim --serial pty` subprocess; stops itself on exit from the with block."""

    def __init__(self, baud: int = BAUD, corrupt: float = 0.0, seed: int = 0) -> None:
        faults = ["--faults", f"corrupt={corrupt}", "--fault-seed", str(seed)] if corrupt else []
        super().__init__(["--serial", "pty", "--baud", str(baud), "--clock", "virtual", *faults], "serial: ", SIM_START_TIMEOUT)
        self.path = self.first_line.removeprefix("serial: ").strip()


async def _uploads(path: str, tables: list[tuple[str, bytes]], repeats: int, baud: int, corrupt: float = 0.0) -> list[dict[str, Any]]:
    results = await _uploads_on(path, tables, repeats, baud)
    for result in results:
        result["corrupt"] = corrupt
    return results


async def _uploads_on(path: str, tables: list[tuple[str, bytes]], repeats: int, baud: int) -> list[dict[str, Any]]:
    client = BandClient.open(f"serial:{path}?baud={baud}")
    probe = Instrumented(client)
    results = []
    async with client:
        for label, data in tables:
            for run in range(repeats):
                await asyncio.sleep(0.05)  # let the previous commit's notification drain
                probe.reset()
                phases = client.transport.phases = Phases()  # BandClient.upload records BEGIN, data and COMMIT
                start = time.perf_counter()
                result = await asyncio.wait_for(client.upload(data), UPLOAD_TIMEOUT)
                wall = time.perf_counter() - start
                await asyncio.sleep(0.05)  # bytes already on their way (the status notification) count too
                limit = len(data) * BITS_PER_BYTE / baud
                results.append({
                    "table": label, "run": run + 1, "bytes": len(data), "wall_s": wall, "limit_s": limit, "ratio": wall / limit,
                    "begin_s": phases.total("UPLOAD_BEGIN"), "data_s": phases.total("data"), "commit_s": phases.total("UPLOAD_COMMIT"),
                    "frames": result.frames_sent, "retransmissions": result.retransmissions,
                    "up_bytes": probe.sent, "down_bytes": probe.received,
                    "framed_limit_s": probe.sent * BITS_PER_BYTE / baud,
                })
    return results


def commit_breakdown(data: bytes) -> tuple[float, int, float]:
    """An in-process band commits ``data``: (commit s, decode_table calls, s inside decode_table).

    The table is uploaded straight into a :class:`ProtocolHandler` (no link); ``decode_table``
    is wrapped, for the duration of the commit, wherever the band's modules imported it.
    """
    import firmware_sim.handler
    import firmware_sim.interpreter
    import firmware_sim.storage
    from firmware_sim.band import Band
    from firmware_sim.clock import VirtualClock
    from firmware_sim.flash import Flash
    from firmware_sim.storage import FLASH_SIZE, Storage
    from protocol.framing import encode_frame
    from protocol.messages import UploadBeginRequest, UploadCommitRequest, UploadDataRequest, encode_request

    band = Band(Storage(Flash(FLASH_SIZE)), VirtualClock())
    handler = firmware_sim.handler.ProtocolHandler(band)
    handler.attach("bench", lambda frame: None)
    handler.receive("bench", encode_frame(encode_request(UploadBeginRequest(length=len(data), crc32=zlib.crc32(data)), 1)))
    chunk = handler.max_frame - 8
    for offset in range(0, len(data), chunk):
        handler.receive("bench", encode_frame(encode_request(UploadDataRequest(offset=offset, data=data[offset : offset + chunk]), 2)))
    calls, inside = 0, 0.0
    modules = [m for m in (firmware_sim.storage, firmware_sim.interpreter, firmware_sim.handler) if hasattr(m, "decode_table")]
    originals = {m: m.decode_table for m in modules}

    def wrap(original: Any) -> Any:
        def counted(table: bytes, *args: Any, **kwargs: Any) -> Any:
            nonlocal calls, inside
            start = time.perf_counter()
            try:
                return original(table, *args, **kwargs)
            finally:
                calls += 1
                inside += time.perf_counter() - start
        return counted

    try:
        for module in modules:
            module.decode_table = wrap(originals[module])  # type: ignore[attr-defined]
        start = time.perf_counter()
        handler.receive("bench", encode_frame(encode_request(UploadCommitRequest(), 3)))
        total = time.perf_counter() - start
    finally:
        for module, original in originals.items():
            module.decode_table = original  # type: ignore[attr-defined]
    if band.storage.active_table() != data:
        raise RuntimeError("in-process commit did not store the table")
    return total, calls, inside


def run(*, table_bytes: int = 8192, repeats: int = 3, shipped: str | None = "full-hand-massage", baud: int = BAUD,
        slow_baud: int | None = SLOW_BAUD, corrupt: float | None = CORRUPT) -> Report:
    tables = [(f"synthetic {table_bytes} B", upload_table(table_bytes))]
    if shipped:
        tables.append((f"{shipped} (names)", compile_routine(load_routine(shipped), names=True)))
    big = tables[:1]
    with SerialSim(baud) as sim:
        results = asyncio.run(_uploads(sim.path, tables, repeats, baud))
    noisy: list[dict[str, Any]] = []
    if corrupt:
        with SerialSim(baud, corrupt, seed=1) as sim:
            noisy = asyncio.run(_uploads(sim.path, big, repeats, baud, corrupt))
    slow: list[dict[str, Any]] = []
    slow_noisy: list[dict[str, Any]] = []
    if slow_baud:
        with SerialSim(slow_baud) as sim:
            slow = asyncio.run(_uploads(sim.path, big, repeats, slow_baud))
        if corrupt:
            with SerialSim(slow_baud, corrupt, seed=10) as sim:
                slow_noisy = asyncio.run(_uploads(sim.path, big, repeats, slow_baud, corrupt))
    rows: list[Row] = []
    summary = []
    for label, _ in tables:
        runs = [r for r in results if r["table"] == label]
        wall = median([r["wall_s"] for r in runs])
        limit = runs[0]["limit_s"]
        is_big = label.startswith("synthetic")
        rows.append(Row(f"{label}: upload wall time at {baud} baud (median of {len(runs)})", f"{wall * 1000:.0f} ms (limit {limit * 1000:.0f} ms)"))
        rows.append(Row(f"{label}: wall / wire-time limit at {baud} baud", ratio(wall / limit), f"<= {TARGET_RATIO}x" if is_big else "",
                        wall / limit <= TARGET_RATIO if is_big else None))
        summary.append((label, runs))
    if slow:
        wall, limit = median([r["wall_s"] for r in slow]), slow[0]["limit_s"]
        rows.append(Row(f"{big[0][0]}: wall / wire-time limit at {slow_baud} baud", ratio(wall / limit), f"<= {TARGET_RATIO}x",
                        wall / limit <= TARGET_RATIO))
    for clean_runs, noisy_runs, rate in ((summary[0][1], noisy, baud), (slow, slow_noisy, slow_baud)):
        if noisy_runs:
            fraction = median([r["wall_s"] for r in clean_runs]) / median([r["wall_s"] for r in noisy_runs])
            rows.append(Row(f"{big[0][0]}: goodput through corrupt={corrupt} at {rate} baud, fraction of clean",
                            f"{fraction:.2f} ({sum(r['retransmissions'] for r in noisy_runs)} frames resent in {len(noisy_runs)} uploads)"))
    header = ["table", "baud", "corrupt", "run", "bytes", "wall", "limit", "wall/limit", "BEGIN", "data phase", "data/limit", "COMMIT", "frames",
              "retx", "bytes up", "bytes down", "framed wire time", "wall/framed"]
    every = [(r, baud) for r in results] + [(r, baud) for r in noisy] + [(r, slow_baud) for r in slow + slow_noisy]
    body = [
        [r["table"], rate, r.get("corrupt", 0), r["run"], r["bytes"], f"{r['wall_s'] * 1000:.0f} ms", f"{r['limit_s'] * 1000:.0f} ms", ratio(r["ratio"]),
         f"{r['begin_s'] * 1000:.1f} ms", f"{r['data_s'] * 1000:.0f} ms", ratio(r["data_s"] / r["limit_s"]), f"{r['commit_s'] * 1000:.0f} ms",
         r["frames"], r["retransmissions"], r["up_bytes"], r["down_bytes"], f"{r['framed_limit_s'] * 1000:.0f} ms",
         ratio(r["wall_s"] / r["framed_limit_s"])]
        for r, rate in every
    ]
    details = ("Every upload (the data phase runs from the first data frame, which follows UPLOAD_BEGIN without waiting for its answer, "
               "to the band's confirmation of the last byte, so BEGIN's round trip lies inside it; data phase and COMMIT add up to the "
               "wall time; *framed wire time* is the bytes really "
               f"written to the port x {BITS_PER_BYTE} / baud; on the noisy link, bytes up and down are what the companion "
               "wrote and received):\n\n" + md_table(header, body))
    big_runs = summary[0][1]
    commit = median([r["commit_s"] for r in big_runs])
    data_phase = median([r["data_s"] for r in big_runs])
    up = big_runs[0]["up_bytes"]
    commit_s, decode_calls, decode_s = commit_breakdown(tables[0][1])
    notes = [
        f"8 KiB: the data phase takes {data_phase * 1000:.0f} ms ({data_phase / big_runs[0]['limit_s']:.2f}x the limit) and UPLOAD_COMMIT "
        f"{commit * 1000:.0f} ms (median); the framing adds {up - big_runs[0]['bytes']} bytes ({(up / big_runs[0]['bytes'] - 1) * 100:.1f} %) upstream.",
        f"The same commit in process (no link): {commit_s * 1000:.0f} ms, of which {decode_s * 1000:.0f} ms in {decode_calls} calls of "
        f"`protocol.table.decode_table` ({decode_s / max(decode_calls, 1) * 1000:.1f} ms each, reusing the records the band decoded as the data "
        "arrived) by the band's storage, interpreter and handler.",
    ]
    if noisy:
        notes.append("Noisy link: every upload completed with the band's CRC equal to the table's; the chunk shrinks after losses "
                     f"and grows back when clean (median {median([r['bytes'] / r['frames'] for r in noisy]):.0f} table bytes per frame "
                     f"sent at {baud} baud, against {big_runs[0]['bytes'] / big_runs[0]['frames']:.0f} clean).")
    data = {"uploads": results, "noisy_uploads": noisy, "slow_uploads": slow, "slow_noisy_uploads": slow_noisy}
    return Report(NAME, TITLE, METHOD, rows, details, notes, data=data)
