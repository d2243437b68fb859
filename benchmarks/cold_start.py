"""Cold start: from typing `handcue upload` to the band being ready, phase by phase, over BLE (paced link) and serial."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from . import REPO, Report, Row, md_table, median
from .sim_process import SimProcess

NAME = "cold_start"
TITLE = "6. Cold start"
ROUTINE = "full-hand-massage"
INTERVAL_MS = 15.0
PACKETS = 6
PHY = "2M"
BAUD = 115200
BAND = "HandCue-1A2B"
COMMANDS = ("upload", "start", "status")
KNOWN = "ble-known"
"""A band used before: its address is in ``bands.json``, so no scan."""
TARGET_EVENTS = {"upload": 10, "status": 5}
SIM_START_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0
PROBE = Path(__file__).with_name("phase_probe.py")

BLE_ORDER = ("process start", "imports (companion CLI)", "load and compile the routine", "imports (bleak, bumble; lazy in the CLI)", "HCI transport and host power-on",
             "scan until seen", "connect", "MTU exchange", "service discovery", "subscribe to TX", "read pairing state")
SERIAL_ORDER = ("process start", "imports (companion CLI)", "load and compile the routine", "open serial port")
LINK_PHASES = ("scan until seen", "connect", "MTU exchange", "service discovery", "subscribe to TX", "read pairing state", "INFO", "STATUS", "UPLOAD_BEGIN", "data",
               "UPLOAD_COMMIT", "START")
"""Phases spent waiting for the radio (their length in connection events hardly varies); the rest is CPU."""
REQUEST_ORDER = ("INFO", "STATUS", "UPLOAD_BEGIN", "data", "UPLOAD_COMMIT", "START", "STOP", "disconnect", "exit")

METHOD = f"""\
What a user waits for: `handcue upload {ROUTINE} --to ADDRESS` (then `handcue start` and
`handcue status`), each a new process, against a `handcue-sim` subprocess: over BLE with
`--hci-server tcp-server:127.0.0.1:PORT --ble-interval {INTERVAL_MS:g}ms --ble-packets {PACKETS} --phy {PHY}` (the band and the
companion's virtual controller on a paced link, see *BLE upload*; the companion's bumble host attaches over
TCP with `--hci tcp-client:...`), and over serial with `--serial pty --baud {BAUD}`.

Each command runs under `benchmarks/phase_probe.py`, which timestamps (wall clock) the phases by
wrapping, in that process only, the functions that do them: bleak's `BleakScanner.find_device_by_name`
(*scan until seen*), bumble's `Device.connect` (*connect*), `Peer.request_mtu` (*MTU exchange*), the
backend's discovery and GAP-name read (*service discovery*), `start_notify` (*subscribe*), the serial
transport's `connect`, `BandClient.request` per opcode, the transports' `disconnect`. The companion's code
is not changed. *process start* is from the parent's spawn to the probe's first line (interpreter start);
*imports (bleak, bumble)* are paid lazily by the CLI, here just before the command so the wrappers can be
installed; *data* is from the end of UPLOAD_BEGIN to the start of UPLOAD_COMMIT; *exit* is from the
probe's exit handler to the parent seeing the process end; *other* is the rest (argument parsing, the
command's own lazy imports, the event loop, printing, the gaps between phases). Medians of the runs; the band keeps running
between commands, as a band does.

Over BLE the companion is measured twice: on first use (its `bands.json` emptied before every command,
so a scan finds the band) and for a band used before (its address remembered by one `handcue info`
first, so it connects without a scan; `XDG_CONFIG_HOME` is a folder of the benchmark's own). Both
discover only the HandCue service, and the band advertises every 20 ms for 30 s after boot or a
disconnect. `handcue -v` prints the same phases, as the companion itself records them.

Targets ({INTERVAL_MS:g} ms link, a known band): upload of the full routine in at most the process start plus
{TARGET_EVENTS['upload']} connection events; `handcue status` in at most the process start plus {TARGET_EVENTS['status']} events.
*Process start* there means the interpreter start plus the CLI's own imports. The phases that wait on the
link (scan, connect, MTU, discovery, subscription, requests) take a nearly fixed number of connection
events; the others are CPU time and grow with the machine's load."""


class Sim(SimProcess):
    """A `handcue-sim` subprocess serving BLE (paced) or a pty; stops on exit from the with block."""

    def __init__(self, transport: str) -> None:
        self.band_address = ""
        if transport.startswith("ble"):
            from ble_stack.addresses import free_tcp_port

            port = free_tcp_port()
            args = ["--hci-server", f"tcp-server:127.0.0.1:{port}", "--ble-interval", f"{INTERVAL_MS:g}ms", "--ble-packets", str(PACKETS), "--phy", PHY]
            self.options = ["--to", f"ble:{BAND}", "--hci", f"tcp-client:127.0.0.1:{port}"]
            prefix = "ble: "
        else:
            args, prefix = ["--serial", "pty", "--baud", str(BAUD)], "serial: "
        super().__init__(["--clock", "virtual", *args], prefix, SIM_START_TIMEOUT)
        if prefix == "ble: ":
            self.band_address = self.first_line.split()[2]  # ble: NAME ADDRESS via ...
        if transport == "serial":
            self.options = ["--to", f"serial:{self.first_line.removeprefix(prefix).strip()}?baud={BAUD}"]


def exclusive(spans: list[tuple[str, float, float]]) -> dict[str, float]:
    """Seconds per label, a span's time less that of the spans directly inside it (the scan opens the HCI transport)."""
    def inside(a: tuple[str, float, float], b: tuple[str, float, float]) -> bool:
        return a is not b and b[1] <= a[1] and a[2] <= b[2]

    totals: dict[str, float] = defaultdict(float)
    for span in spans:
        children = [c for c in spans if inside(c, span) and not any(inside(c, d) and inside(d, span) for d in spans)]
        totals[span[0]] += (span[2] - span[1]) - sum(c[2] - c[1] for c in children)
    return dict(totals)


def probe_command(args: list[str], config_home: str) -> dict[str, float]:
    """Run one handcue command under the phase probe, with its config folder in ``config_home``;
    returns seconds per phase (and "total")."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "phases.json"
        spawned = time.time()
        env = {**os.environ, "XDG_CONFIG_HOME": config_home}
        done = subprocess.run([sys.executable, str(PROBE), str(out), *args], cwd=REPO, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, env=env)
        ended = time.time()
        if done.returncode != 0:
            raise RuntimeError(f"handcue {' '.join(args)} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
        record = json.loads(out.read_text())
    phases: dict[str, float] = defaultdict(float)
    phases["process start"] = record["started"] - spawned
    recorded = [tuple(span) for span in record["phases"]]
    spans = {label: (start, end) for label, start, end in recorded}
    for label, seconds in exclusive(recorded).items():
        phases[label] += seconds
    if "UPLOAD_BEGIN" in spans and "UPLOAD_COMMIT" in spans:
        phases["data"] = spans["UPLOAD_COMMIT"][0] - spans["UPLOAD_BEGIN"][1]
    phases["exit"] = ended - record["exited"]
    phases["total"] = ended - spawned
    phases["other"] = phases["total"] - sum(v for k, v in phases.items() if k not in ("total",))
    return dict(phases)


def measure(transport: str, commands: tuple[str, ...], repeats: int) -> dict[str, list[dict[str, float]]]:
    """Each command ``repeats`` times; over ``ble`` as on first use (no remembered address: a scan),
    over ``ble-known`` with the band's address remembered by one command before."""
    runs: dict[str, list[dict[str, float]]] = {command: [] for command in commands}
    with Sim(transport) as sim, tempfile.TemporaryDirectory() as config_home:
        bands = Path(config_home) / "handcue" / "bands.json"
        if transport == KNOWN:
            probe_command(["info", *sim.options], config_home)  # the band is used once: its address is remembered
            if not bands.exists():
                raise RuntimeError("handcue info did not remember the band's address")
        for _ in range(repeats):
            for command in commands:
                if transport == "ble":
                    bands.unlink(missing_ok=True)  # first use: the band must be found by a scan
                args = [command, ROUTINE, *sim.options] if command == "upload" else [command, *sim.options]
                runs[command].append(probe_command(args, config_home))
            if "start" in commands:
                probe_command(["stop", *sim.options], config_home)  # so that the next upload is accepted
    return runs


def run(*, transports: tuple[str, ...] = ("ble", KNOWN, "serial"), commands: tuple[str, ...] = COMMANDS, repeats: int = 3) -> Report:
    results = {transport: measure(transport, commands, repeats) for transport in transports}
    rows: list[Row] = []
    details: list[str] = []
    event = INTERVAL_MS / 1000.0
    for transport, runs in results.items():
        is_ble = transport.startswith("ble")
        order = (BLE_ORDER if is_ble else SERIAL_ORDER) + REQUEST_ORDER + ("other", "total")
        header = ["phase", *[f"`handcue {command}`" for command in runs]]
        table = []
        for phase in order:
            values = [median([r.get(phase, 0.0) for r in runs[command]]) for command in runs]
            if any(v > 0.0005 for v in values) or phase == "total":
                cells = [f"{v * 1000:.0f} ms" if v > 0.0005 else "" for v in values]
                if is_ble and phase != "total":
                    cells = [f"{c} ({v / event:.1f} ev)" if c else c for c, v in zip(cells, values, strict=True)]
                table.append([f"**{phase}**" if phase == "total" else phase, *cells])
        where = f"BLE, paced link {INTERVAL_MS:g} ms / {PACKETS} packets / {PHY} (ev = connection events)" if is_ble else f"serial, pty at {BAUD} baud"
        where += ", a band used before (its address remembered: no scan)" if transport == KNOWN else ", first use (a scan finds the band)" if is_ble else ""
        details.append(f"{where}; median of {repeats} run(s):\n\n" + md_table(header, table))
        for command, command_runs in runs.items():
            total = median([r["total"] for r in command_runs])
            start = median([r["process start"] + r.get("imports (companion CLI)", 0.0) for r in command_runs])
            events = (total - start) / event
            target = TARGET_EVENTS.get(command) if transport == KNOWN else None
            on_link = median([sum(r.get(name, 0.0) for name in LINK_PHASES) for r in command_runs]) / event
            value = f"{total * 1000:.0f} ms (process start and CLI imports {start * 1000:.0f} ms" + (
                f", then {events:.0f} connection events, of which {on_link:.0f} waiting on the link)" if is_ble else ")")
            rows.append(Row(f"{transport}: `handcue {command}` cold", value, f"<= start + {target} events" if target else "",
                            events <= target if target else None))
    notes = []
    if "ble" in results and "upload" in results["ble"]:
        ble = results["ble"]["upload"]

        def ms_of(name: str) -> float:
            return median([r.get(name, 0.0) for r in ble]) * 1000

        notes.append(f"Where first-use BLE time goes (`handcue upload`, medians): importing bleak and bumble {ms_of('imports (bleak, bumble; lazy in the CLI)'):.0f} ms, "
                     f"scanning {ms_of('scan until seen'):.0f} ms, connecting {ms_of('connect'):.0f} ms, discovering the HandCue service "
                     f"{ms_of('service discovery'):.0f} ms, against {ms_of('UPLOAD_BEGIN') + ms_of('data') + ms_of('UPLOAD_COMMIT'):.0f} ms for "
                     "BEGIN, data and COMMIT.")
    return Report(NAME, TITLE, METHOD, rows, "\n\n".join(details), notes, data={"runs": results})
