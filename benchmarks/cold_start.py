"""Cold start: from typing `handcue upload` to the process's end, phase by phase, over BLE (paced link) and serial."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

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
UPLOAD_START = "upload --start"
"""`handcue upload ROUTINE --start`: the upload, then START on the same connection."""
COMMANDS = ("upload", "start", "status", UPLOAD_START)
KNOWN = "ble-known"
"""A band used before: its address is in ``bands.json``, so no scan."""
FIRST_USE_COMMANDS = ("upload", "start", "status")
"""What is measured on first use (a scan): ``upload --start`` only for a known band and over serial."""
TARGET_EVENTS = {"upload": 10, "status": 5, UPLOAD_START: 10}
"""Connection events allowed after the process start (issue 14: the upload's phases include START)."""
PLAYS = ("start", UPLOAD_START)
"""Commands after which the band plays: an upload after them needs a STOP first (a playing band refuses one)."""
SIM_START_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0
PROBE = Path(__file__).with_name("phase_probe.py")

LIBRARIES = {
    "ble": ("asyncio", "click", "construct", "bleak", "bumble.device", "bumble.transport.tcp_client"),
    "serial": ("asyncio", "click", "construct", "serial"),
}
"""The libraries a command cannot do without, per transport: the event loop, the CLI's parser, construct (the
wire layouts, SPEC) and the link's own (bleak's API and the bumble host on its HCI transport; pyserial)."""
INTERPRETER = "interpreter start and exit"
"""``python -c pass``: the process start of the issue's wording."""
FLOOR = "interpreter and the libraries"
"""``python -c "import <LIBRARIES>"``: the process start with the imports no HandCue code can avoid."""

LINK_STARTS = ("scan until seen", "connect to the known address", "connect to the band seen", "open serial port")
"""Top-level phases that begin the link; the first of them to start begins **on the link**."""
REQUESTS = ("INFO", "UPLOAD_BEGIN", "data", "UPLOAD_COMMIT", "START", "STATUS", "STOP")
"""The band's answers; the last of them to end closes **on the link**."""
BACKGROUND = ("subscribe to TX", "MTU exchange", "read pairing state")
"""Link phases nobody waits for: they run behind the first requests."""
SPAN = "on the link"
"""From the start of the first link phase (scan, connect or opening the port) to the band's last answer."""
BEFORE = "before the link"
AFTER = "after the link"
TOTAL = "total"
OTHER = "other"
START = "process start"
EXIT = "exit"
NESTED = " › "
"""Joins a parent phase's name and its child's in a row name."""

METHOD = f"""\
What a user waits for: `handcue upload {ROUTINE} --to ADDRESS` (then `handcue start` and
`handcue status`, and `handcue {UPLOAD_START.replace('upload', f'upload {ROUTINE}')} --to ADDRESS`: the upload and START on
one connection, for a known band and over serial; a STOP nobody times comes before an upload to a playing
band), each a new process, against a `handcue-sim --clock real` subprocess (the band plays
its routine in real time, so `status` asks a band that is playing): over BLE with
`--hci-server tcp-server:127.0.0.1:PORT --ble-interval {INTERVAL_MS:g}ms --ble-packets {PACKETS} --phy {PHY}` (the band and the
companion's virtual controller on a paced link, see *BLE upload*; the companion's bumble host attaches over
TCP with `--hci tcp-client:...`), and over serial with `--serial pty --baud {BAUD}`.

Each command runs under `benchmarks/phase_probe.py`, which only collects the phases the companion records
itself from the first line of its CLI module (what `handcue -v` prints, nested phases under their parent) and
times the import of `companion.cli`; the companion's code is not changed. **total** is from the parent's spawn
of the process to the parent seeing it end, and every millisecond of it is in one row: *process start* (spawn
to the probe's first line: the interpreter's start), the phases *before the link* (the imports, each named by
what it loads: the CLI, asyncio and the transports while the address is checked, the routine compiler, the
companion client, bleak and bumble; loading and compiling the routine), **on the link** (from the start of the
first link phase: scan, connect or opening the serial port, to the band's last answer; the phases in it, in
connection events, overlap: the subscription, the MTU exchange and the pairing read run behind the first
requests, and nested phases such as the host's power-on, the link's connect and the GATT cache check are part
of their parent, shown as *parent › phase*), the phases *after the link* (disconnect, closing the bumble host
and the event loop, printing the result), *exit* (from the probe's exit handler to the parent seeing the process
end: the interpreter's exit) and *other*, what no phase covers (click parsing the arguments, the gaps between
phases). The *MTU exchange* runs from the connection to the ATT MTU update (the band asks for its MTU itself, at
once). Medians of the runs; the band keeps running between commands, as a band does.

Bytecode: this repository's test environment sets `PYTHONDONTWRITEBYTECODE`, which would make every command
compile the companion's modules from source (20-40 ms more); an installed package has its bytecode written at
install time, so the commands run with a bytecode cache of the benchmark's own (`PYTHONPYCACHEPREFIX`),
filled by one unmeasured run of each command first.

Over BLE the companion is measured twice: on first use (its `bands.json` and GATT cache emptied before
every command, so a scan finds the band and its HandCue service is discovered) and for a band used before
(its address and GATT handles remembered by one `handcue info` first, so it connects without a scan and
one Database Hash read proves the cached handles; `XDG_CONFIG_HOME` and `XDG_CACHE_HOME` are folders of
the benchmark's own). The band advertises every 20-30 ms for 30 s after boot or a disconnect.

Targets ({INTERVAL_MS:g} ms link, a known band): upload of the full routine in at most *the process start* plus
{TARGET_EVENTS['upload']} connection events, and the same with START (`{UPLOAD_START}`, {TARGET_EVENTS[UPLOAD_START]} events: the issue
counts START among the upload's phases); `handcue status` in at most the process start plus {TARGET_EVENTS['status']} events; judged on
**total** (launch to exit). *The process start* is measured in the same run, two ways, and each verdict is
printed: **{INTERPRETER}** (`python -c pass`, launch to exit: the issue's words taken literally), and
**{FLOOR}** (`python -c "import {', '.join(LIBRARIES['ble'])}"`, launch to exit: the interpreter plus the
imports no HandCue code can avoid on this path: the event loop, the CLI's parser, the wire layouts' construct,
bleak's API and the bumble host with its HCI transport). HandCue's own imports and CPU count against the
target either way. Both floors are measured in the same conditions as the commands, one run of each right before
every measured command (the simulator's real-time work shares the machine's cores), and their medians taken. With bleak's platform backend (a real band) bumble
is not imported at all."""


class Sim(SimProcess):
    """A `handcue-sim` subprocess serving BLE (paced) or a pty, in real time; stops on exit from the with block."""

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
        # Real time: with a virtual clock `start` plays the whole routine at once, and `status` would ask a finished band.
        super().__init__(["--clock", "real", *args], prefix, SIM_START_TIMEOUT)
        if prefix == "ble: ":
            self.band_address = self.first_line.split()[2]  # ble: NAME ADDRESS via ...
        if transport == "serial":
            self.options = ["--to", f"serial:{self.first_line.removeprefix(prefix).strip()}?baud={BAUD}"]


def argv_of(command: str, options: list[str]) -> list[str]:
    """The ``handcue`` arguments of one of :data:`COMMANDS` (an upload names the routine)."""
    if command == UPLOAD_START:
        return ["upload", ROUTINE, "--start", *options]
    return [command, ROUTINE, *options] if command == "upload" else [command, *options]


def child_environment(config_home: str, cache_home: str, bytecode: str) -> dict[str, str]:
    """The commands' environment: the benchmark's config and cache folders, and a bytecode cache (see the method)."""
    env = {**os.environ, "XDG_CONFIG_HOME": config_home, "XDG_CACHE_HOME": cache_home, "PYTHONPYCACHEPREFIX": bytecode}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def wall_time(argv: list[str], env: dict[str, str]) -> float:
    """Seconds from spawning ``argv`` to seeing it end.

    Its output is captured: with pipes, ``subprocess.run`` waits on them and sees the end at once; without,
    a wait with a timeout polls at growing intervals (up to 50 ms) and would add up to 30 ms to a 35 ms process."""
    spawned = time.time()
    subprocess.run(argv, check=True, env=env, timeout=COMMAND_TIMEOUT, capture_output=True)
    return time.time() - spawned


def floor_commands(transport: str) -> dict[str, list[str]]:
    """The two process-start floors as commands: ``python -c pass`` and ``python -c "import <the libraries>"``."""
    imports = f"import {', '.join(LIBRARIES['ble' if transport.startswith('ble') else 'serial'])}"
    return {INTERPRETER: [sys.executable, "-c", "pass"], FLOOR: [sys.executable, "-c", imports]}


def analyse(record: dict[str, Any], spawned: float, ended: float) -> dict[str, float]:
    """Seconds per row of one command's phases: every millisecond of ``total`` in exactly one of
    START, the top-level phases before the link, SPAN, the top-level phases after it, EXIT and OTHER;
    the phases within SPAN (top-level and nested) are reported beside it."""
    phases = [(name, start, end, pid, parent) for name, start, end, pid, parent, _ in record["phases"]]
    ids = {pid for _, _, _, pid, _ in phases}
    top = [p for p in phases if p[4] is None or p[4] not in ids]
    names = {pid: name for name, _, _, pid, _ in phases}
    out: dict[str, float] = defaultdict(float)
    out[START] = record["started"] - spawned
    out[EXIT] = ended - record["exited"]
    out[TOTAL] = ended - spawned
    starts = [start for name, start, _, _, _ in top if name.startswith(LINK_STARTS)]
    answers = [end for name, _, end, _, _ in top if name in REQUESTS]
    span_start = min(starts) if starts else min((start for name, start, _, _, _ in top if name in REQUESTS), default=ended)
    span_end = max(answers) if answers else span_start
    out[SPAN] = span_end - span_start
    for name, start, end, _pid, parent in sorted(phases, key=lambda p: p[1]):  # rows in the order the phases started
        if parent is not None and parent in ids:
            out[f"{names[parent]}{NESTED}{name}"] += end - start
        elif end <= span_start + 1e-6:
            out[f"{BEFORE}: {name}"] += end - start
        elif start >= span_end - 1e-6:
            out[f"{AFTER}: {name}"] += end - start
        else:
            out[name] += end - start
    counted = out[START] + out[SPAN] + out[EXIT] + sum(value for key, value in out.items() if key.startswith((f"{BEFORE}: ", f"{AFTER}: ")))
    out[OTHER] = out[TOTAL] - counted
    return dict(out)


def probe_command(args: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run one handcue command under the phase probe; seconds per row (see :func:`analyse`)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "phases.txt"
        spawned = time.time()
        done = subprocess.run([sys.executable, str(PROBE), str(out), *args], cwd=REPO, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, env=env)
        ended = time.time()
        if done.returncode != 0:
            raise RuntimeError(f"handcue {' '.join(args)} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
        record = ast.literal_eval(out.read_text())
    return analyse(record, spawned, ended)


def measure(transport: str, commands: tuple[str, ...], repeats: int, bytecode: str) -> tuple[dict[str, list[dict[str, float]]], dict[str, float]]:
    """Each command ``repeats`` times, and the process-start floors; over ``ble`` as on first use (no
    remembered address: a scan), over ``ble-known`` with the band's address remembered by one command before."""
    if transport == "ble":
        commands = tuple(command for command in commands if command in FIRST_USE_COMMANDS)
    runs: dict[str, list[dict[str, float]]] = {command: [] for command in commands}
    with Sim(transport) as sim, tempfile.TemporaryDirectory() as config_home, tempfile.TemporaryDirectory() as cache_home:
        env = child_environment(config_home, cache_home, bytecode)
        bands = Path(config_home) / "handcue" / "bands.json"
        gatt = Path(cache_home) / "handcue" / "gatt.json"
        probe_command(["info", *sim.options], env)  # unmeasured: remembers the band
        if transport == KNOWN and (not bands.exists() or not gatt.exists()):
            raise RuntimeError("handcue info did not remember the band's address and GATT handles")
        playing = False

        def stopped_if_playing() -> None:
            """STOP (unmeasured) if the last command left the band playing: the next upload is then accepted."""
            nonlocal playing
            if playing:
                probe_command(["stop", *sim.options], env)
                playing = False

        for command in commands:  # unmeasured: fills the bytecode cache with what each command imports
            if command.startswith("upload"):
                stopped_if_playing()
            probe_command(argv_of(command, sim.options), env)
            playing = playing or command in PLAYS
        stopped_if_playing()
        floor_argv = floor_commands(transport)
        floor_runs: dict[str, list[float]] = {name: [] for name in floor_argv}
        for argv in floor_argv.values():
            wall_time(argv, env)  # unmeasured: fills the bytecode cache
        for _ in range(repeats):
            for command in commands:
                if command.startswith("upload"):
                    stopped_if_playing()  # so that the upload is accepted
                for name, argv in floor_argv.items():  # right before each command: the same load on the machine
                    floor_runs[name].append(wall_time(argv, env))
                if transport == "ble":
                    bands.unlink(missing_ok=True)  # first use: the band must be found by a scan
                    gatt.unlink(missing_ok=True)  # ... and its service discovered
                runs[command].append(probe_command(argv_of(command, sim.options), env))
                playing = playing or command in PLAYS
            stopped_if_playing()
    return runs, {name: median(values) for name, values in floor_runs.items()}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def verdict(total: float, start: float, events: int) -> tuple[str, bool]:
    """``total`` against ``start`` + ``events`` connection events: the sentence and whether it is met."""
    target = start + events * INTERVAL_MS / 1000
    margin = target - total
    text = (f"{ms(total)} against {ms(start)} + {events} x {INTERVAL_MS:g} ms = {ms(target)}: "
            + (f"{ms(margin)} to spare" if margin >= 0 else f"MISSED by {ms(-margin)} ({-margin / (INTERVAL_MS / 1000):.1f} events)"))
    return text, margin >= 0


def run(*, transports: tuple[str, ...] = ("ble", KNOWN, "serial"), commands: tuple[str, ...] = COMMANDS, repeats: int = 3) -> Report:
    with tempfile.TemporaryDirectory() as bytecode:
        results = {transport: measure(transport, commands, repeats, bytecode) for transport in transports}
    rows: list[Row] = []
    details: list[str] = []
    notes: list[str] = []
    event = INTERVAL_MS / 1000.0
    for transport, (runs, floors) in results.items():
        is_ble = transport.startswith("ble")
        keys: list[str] = []
        for command_runs in runs.values():
            for r in command_runs:
                keys += [key for key in r if key not in keys]

        def order(key: str) -> tuple[int, str]:
            if key == START:
                return 0, ""
            if key.startswith(f"{BEFORE}: "):
                return 1, ""
            if key == SPAN:
                return 2, ""
            if key.startswith(f"{AFTER}: "):
                return 4, ""
            if key in (EXIT, OTHER, TOTAL):
                return 5 + (EXIT, OTHER, TOTAL).index(key), ""
            return 3, ""  # the link's phases, under SPAN

        ordered = sorted(keys, key=order)  # stable: within a group, the order the phases were first seen (by time)
        header = ["phase", *[f"`handcue {command}`" for command in runs]]
        table = []
        for key in ordered:
            values = [median([r.get(key, 0.0) for r in runs[command]]) for command in runs]
            if not any(v > 0.0005 for v in values) and key not in (TOTAL, SPAN, OTHER):
                continue
            cells = [ms(v) if v > 0.0005 or key in (OTHER,) else "" for v in values]
            group = order(key)[0]
            if group in (2, 3):
                cells = [f"{c} ({v / event:.1f} ev)" if c else c for c, v in zip(cells, values, strict=True)]
            label = key.split(": ", 1)[1] if group in (1, 4) else key
            if key in (TOTAL, SPAN):
                label = f"**{key}**"
            elif group == 3:
                label = f"&nbsp;&nbsp;{label}" + (" (overlapped)" if key.startswith(BACKGROUND) else "")
            table.append([label, *cells])
        where = (f"BLE, paced link {INTERVAL_MS:g} ms / {PACKETS} packets / {PHY} (ev = connection events)" if is_ble
                 else f"serial, pty at {BAUD} baud (ev = {INTERVAL_MS:g} ms, for comparison)")
        if transport == KNOWN:
            where += ", a band used before (address and GATT handles remembered)"
        elif is_ble:
            where += ", first use (a scan finds the band, its service is discovered)"
        floor_text = (f"process start measured in the same run: {INTERPRETER} {ms(floors[INTERPRETER])}, "
                      f"{FLOOR} ({', '.join(LIBRARIES['ble' if is_ble else 'serial'])}) {ms(floors[FLOOR])}")
        details.append(f"{where}; median of {repeats} run(s); {floor_text}:\n\n" + md_table(header, table))
        for command, command_runs in runs.items():
            total = median([r[TOTAL] for r in command_runs])
            before = median([sum(v for k, v in r.items() if k.startswith(f"{BEFORE}: ")) for r in command_runs])
            on_link = median([r.get(SPAN, 0.0) for r in command_runs])
            after = median([sum(v for k, v in r.items() if k.startswith(f"{AFTER}: ")) + r[EXIT] for r in command_runs])
            value = (f"{ms(total)}: process start {ms(median([r[START] for r in command_runs]))}, before the link {ms(before)}, "
                     f"on the link {ms(on_link)} ({on_link / event:.1f} events), after it and exit {ms(after)}, "
                     f"other {ms(median([r[OTHER] for r in command_runs]))}")
            target = TARGET_EVENTS.get(command) if transport == KNOWN else None
            rows.append(Row(f"{transport}: `handcue {command}` cold", value))
            if target:
                for name in (INTERPRETER, FLOOR):
                    text, met = verdict(total, floors[name], target)
                    rows.append(Row(f"{transport}: `handcue {command}` total vs {name}", text,
                                    f"<= {name} + {target} connection events", met))
    if "ble" in results and "upload" in results["ble"][0]:
        ble = results["ble"][0]["upload"]

        def ms_of(*names: str) -> str:
            return ms(median([sum(r.get(name, 0.0) for name in names) for r in ble]))

        notes.append(f"Where first-use BLE time goes (`handcue upload`, medians): importing bleak and bumble {ms_of(f'{BEFORE}: imports (bleak, bumble)')}, "
                     f"scanning {ms_of('scan until seen')}, connecting {ms_of('connect to the band seen')}, of which discovering the HandCue service "
                     f"{ms_of(f'connect to the band seen{NESTED}service discovery')}.")
    if KNOWN in results and "ble" in results:
        for command in ("upload", "status"):
            if command in results[KNOWN][0] and command in results["ble"][0]:
                known = median([r.get(SPAN, 0.0) for r in results[KNOWN][0][command]]) / event
                first = median([r.get(SPAN, 0.0) for r in results["ble"][0][command]]) / event
                notes.append(f"`handcue {command}` on the link: {first:.1f} events on first use, {known:.1f} for a band used before.")
    if KNOWN in results and "status" in results[KNOWN][0]:
        known_status = results[KNOWN][0]["status"]

        def events_of(name: str) -> float:
            return median([r.get(name, 0.0) for r in known_status]) / event

        link = "connect to the known address"
        notes.append(f"Where a known band's `handcue status` spends its {events_of(SPAN):.1f} events on the link: the link's connect "
                     f"{events_of(f'{link}{NESTED}connect'):.1f} (the wait for the band's next advertisement), the Database Hash check of the "
                     f"cached handles {events_of(f'{link}{NESTED}check cached GATT handles (Database Hash)'):.1f}, then INFO and STATUS "
                     f"{events_of('INFO'):.1f} (written in the next event with the subscription's CCCD write, whose answer they do "
                     f"not wait for, and answered in the event after: a request sent just after an event takes two). "
                     f"The target allows {TARGET_EVENTS['status']} events for everything after the process start.")
    data = {"runs": {transport: runs for transport, (runs, _) in results.items()}, "floors": {transport: floors for transport, (_, floors) in results.items()}}
    return Report(NAME, TITLE, METHOD, rows, "\n\n".join(details), notes, data=data)
