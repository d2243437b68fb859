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

CPU_ORDER = ("process start", "imports (companion CLI)", "load and compile the routine", "imports (bleak, bumble; lazy in the CLI)",
             "HCI transport and host power-on", "open serial port")
"""Phases that are CPU time (they grow with the machine's load), before the link is used."""
LINK_ORDER = ("scan until seen", "connect", "check cached GATT handles (Database Hash)", "read Database Hash for the GATT cache", "service discovery",
              "subscribe to TX", "MTU exchange", "read pairing state")
"""Phases waiting on the radio, as the companion records them; the last three overlap the requests (nobody waits for them)."""
BACKGROUND = ("subscribe to TX", "MTU exchange", "read pairing state")
REQUEST_ORDER = ("INFO", "UPLOAD_BEGIN", "data", "UPLOAD_COMMIT", "START", "STATUS", "STOP")
SPAN = "on the link"
"""From the first link phase (scan or connect) to the band's last answer: what the link makes the user wait."""
CONNECTED = "connection events after connecting"
"""The part of SPAN after the link is up (less the scan and the wait for the band's advertisement to connect)."""
AFTER_ORDER = ("disconnect", "exit")

METHOD = f"""\
What a user waits for: `handcue upload {ROUTINE} --to ADDRESS` (then `handcue start` and
`handcue status`), each a new process, against a `handcue-sim` subprocess: over BLE with
`--hci-server tcp-server:127.0.0.1:PORT --ble-interval {INTERVAL_MS:g}ms --ble-packets {PACKETS} --phy {PHY}` (the band and the
companion's virtual controller on a paced link, see *BLE upload*; the companion's bumble host attaches over
TCP with `--hci tcp-client:...`), and over serial with `--serial pty --baud {BAUD}`.

Each command runs under `benchmarks/phase_probe.py`, which collects the phases the companion records
itself (what `handcue -v` prints: scan, connect, the GATT cache check or the discovery, the subscription,
the MTU exchange, the pairing read, each request) and timestamps the CPU phases around them by wrapping,
in that process only, the functions that do them (the CLI import, loading the routine, the bumble host's
power-on, the transports' disconnect). The companion's code is not changed. *process start* is from the
parent's spawn to the probe's first line (interpreter start); *imports (bleak, bumble)* are paid lazily by
the CLI, here just before the command; *data* is from the end of UPLOAD_BEGIN to the start of
UPLOAD_COMMIT. The subscription, the MTU exchange and the pairing read run behind the first requests
(nobody waits for them), so the link phases overlap: **on the link** is the time from the start of the
first link phase (scan or connect) to the band's last answer, in connection events. *exit* is from the
probe's exit handler to the parent seeing the process end; *other* is the rest (argument parsing, the
event loop, printing, the gaps between phases). Medians of the runs; the band keeps running between
commands, as a band does.

Over BLE the companion is measured twice: on first use (its `bands.json` and GATT cache emptied before
every command, so a scan finds the band and its HandCue service is discovered) and for a band used before
(its address and GATT handles remembered by one `handcue info` first, so it connects without a scan and
one Database Hash read proves the cached handles; `XDG_CONFIG_HOME` and `XDG_CACHE_HOME` are folders of
the benchmark's own). The band advertises every 20-30 ms for 30 s after boot or a disconnect and asks for
its ATT MTU itself at once.

Targets ({INTERVAL_MS:g} ms link, a known band): upload of the full routine in at most the process start plus
{TARGET_EVENTS['upload']} connection events; `handcue status` in at most the process start plus {TARGET_EVENTS['status']} events. The
events counted are the connection events once the link is up (**on the link** less the scan and the wait
for the band's next advertisement to connect, which is advertising time, about one event at the band's
20 ms fast interval); **on the link** is printed beside them. Everything before it (interpreter, imports, the bumble
host's power-on) is CPU time of the process start, and grows with the machine's load. With bleak's
platform backend (a real band) bumble is not imported at all."""


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


def probe_command(args: list[str], config_home: str, cache_home: str) -> dict[str, float]:
    """Run one handcue command under the phase probe, with its config and cache folders given;
    returns seconds per phase (and SPAN, "other" and "total")."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "phases.json"
        spawned = time.time()
        env = {**os.environ, "XDG_CONFIG_HOME": config_home, "XDG_CACHE_HOME": cache_home}
        done = subprocess.run([sys.executable, str(PROBE), str(out), *args], cwd=REPO, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, env=env)
        ended = time.time()
        if done.returncode != 0:
            raise RuntimeError(f"handcue {' '.join(args)} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
        record = json.loads(out.read_text())
    phases: dict[str, float] = defaultdict(float)
    phases["process start"] = record["started"] - spawned
    spans = [(label, start, end) for label, start, end in record["phases"]]
    known = set(CPU_ORDER + LINK_ORDER + REQUEST_ORDER + AFTER_ORDER)
    for label, start, end in spans:
        if label in known and label != "data":
            phases[label] += end - start
    link = [(start, end) for label, start, end in spans if label in LINK_ORDER]
    answers = [end for label, _, end in spans if label in REQUEST_ORDER]
    if link and answers:
        phases[SPAN] = max(answers) - min(start for start, _ in link)
    elif answers:  # serial: from opening the port
        opened = [start for label, start, _ in spans if label == "open serial port"]
        phases[SPAN] = max(answers) - min(opened or [min(start for label, start, _ in spans if label in REQUEST_ORDER)])
    if SPAN in phases and link:
        phases[CONNECTED] = phases[SPAN] - phases.get("scan until seen", 0.0) - phases.get("connect", 0.0)
    begins = [end for label, _, end in spans if label == "UPLOAD_BEGIN"]
    commits = [start for label, start, _ in spans if label == "UPLOAD_COMMIT"]
    if begins and commits:
        phases["data"] = commits[0] - begins[0]
    phases["exit"] = ended - record["exited"]
    phases["total"] = ended - spawned
    counted = sum(phases.get(name, 0.0) for name in (*CPU_ORDER, SPAN, *AFTER_ORDER))
    phases["other"] = phases["total"] - counted
    return dict(phases)


def measure(transport: str, commands: tuple[str, ...], repeats: int) -> dict[str, list[dict[str, float]]]:
    """Each command ``repeats`` times; over ``ble`` as on first use (no remembered address: a scan),
    over ``ble-known`` with the band's address remembered by one command before."""
    runs: dict[str, list[dict[str, float]]] = {command: [] for command in commands}
    with Sim(transport) as sim, tempfile.TemporaryDirectory() as config_home, tempfile.TemporaryDirectory() as cache_home:
        bands = Path(config_home) / "handcue" / "bands.json"
        gatt = Path(cache_home) / "handcue" / "gatt.json"
        if transport == KNOWN:
            probe_command(["info", *sim.options], config_home, cache_home)  # the band is used once: its address and handles are remembered
            if not bands.exists() or not gatt.exists():
                raise RuntimeError("handcue info did not remember the band's address and GATT handles")
        for _ in range(repeats):
            for command in commands:
                if transport == "ble":
                    bands.unlink(missing_ok=True)  # first use: the band must be found by a scan
                    gatt.unlink(missing_ok=True)  # ... and its service discovered
                args = [command, ROUTINE, *sim.options] if command == "upload" else [command, *sim.options]
                runs[command].append(probe_command(args, config_home, cache_home))
            if "start" in commands:
                probe_command(["stop", *sim.options], config_home, cache_home)  # so that the next upload is accepted
    return runs


def run(*, transports: tuple[str, ...] = ("ble", KNOWN, "serial"), commands: tuple[str, ...] = COMMANDS, repeats: int = 3) -> Report:
    results = {transport: measure(transport, commands, repeats) for transport in transports}
    rows: list[Row] = []
    details: list[str] = []
    event = INTERVAL_MS / 1000.0
    for transport, runs in results.items():
        is_ble = transport.startswith("ble")
        order = (*CPU_ORDER, *(LINK_ORDER if is_ble else ()), *REQUEST_ORDER, SPAN, *((CONNECTED,) if is_ble else ()), *AFTER_ORDER, "other", "total")
        header = ["phase", *[f"`handcue {command}`" for command in runs]]
        table = []
        for phase in order:
            values = [median([r.get(phase, 0.0) for r in runs[command]]) for command in runs]
            if any(v > 0.0005 for v in values) or phase in ("total", SPAN):
                cells = [f"{v * 1000:.0f} ms" if v > 0.0005 else "" for v in values]
                if phase not in (*CPU_ORDER, *AFTER_ORDER, "other", "total"):
                    cells = [f"{c} ({v / event:.1f} ev)" if c else c for c, v in zip(cells, values, strict=True)]
                name = f"**{phase}**" if phase in ("total", SPAN, CONNECTED) else f"{phase} (overlapped)" if phase in BACKGROUND else phase
                table.append([name, *cells])
        where = (f"BLE, paced link {INTERVAL_MS:g} ms / {PACKETS} packets / {PHY} (ev = connection events)" if is_ble
                 else f"serial, pty at {BAUD} baud (ev = {INTERVAL_MS:g} ms, for comparison)")
        if transport == KNOWN:
            where += ", a band used before (address and GATT handles remembered)"
        elif is_ble:
            where += ", first use (a scan finds the band, its service is discovered)"
        details.append(f"{where}; median of {repeats} run(s):\n\n" + md_table(header, table))
        for command, command_runs in runs.items():
            total = median([r["total"] for r in command_runs])
            start = median([sum(r.get(name, 0.0) for name in CPU_ORDER) for r in command_runs])
            on_link = median([r.get(SPAN, 0.0) for r in command_runs]) / event
            connected = median([r.get(CONNECTED, 0.0) for r in command_runs]) / event
            target = TARGET_EVENTS.get(command) if transport == KNOWN else None
            value = f"{total * 1000:.0f} ms: process start and CPU {start * 1000:.0f} ms, then {on_link:.1f} events on the link"
            if is_ble:
                value += f" ({connected:.1f} connection events once connected)"
            rows.append(Row(f"{transport}: `handcue {command}` cold", value, f"<= start + {target} connection events" if target else "",
                            connected <= target if target else None))
    notes = []
    if "ble" in results and "upload" in results["ble"]:
        ble = results["ble"]["upload"]

        def ms_of(name: str) -> float:
            return median([r.get(name, 0.0) for r in ble]) * 1000

        notes.append(f"Where first-use BLE time goes (`handcue upload`, medians): importing bleak and bumble {ms_of('imports (bleak, bumble; lazy in the CLI)'):.0f} ms, "
                     f"scanning {ms_of('scan until seen'):.0f} ms, connecting {ms_of('connect'):.0f} ms, discovering the HandCue service "
                     f"{ms_of('service discovery'):.0f} ms, against {ms_of('UPLOAD_BEGIN') + ms_of('data') + ms_of('UPLOAD_COMMIT'):.0f} ms for "
                     "BEGIN, data and COMMIT.")
    if KNOWN in results and "ble" in results:
        for command in ("upload", "status"):
            if command in results[KNOWN] and command in results["ble"]:
                known = median([r.get(SPAN, 0.0) for r in results[KNOWN][command]]) / event
                first = median([r.get(SPAN, 0.0) for r in results["ble"][command]]) / event
                notes.append(f"`handcue {command}` on the link: {first:.1f} events on first use, {known:.1f} for a band used before.")
    return Report(NAME, TITLE, METHOD, rows, "\n\n".join(details), notes, data={"runs": results})
