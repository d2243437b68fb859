"""Cold start: from typing `handcue upload` to the process's end, phase by phase, over BLE (paced link) and serial."""

from __future__ import annotations

import ast
import json
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
KNOWN_PAIRED = "ble-known-paired"
"""A band used before and paired with the companion (as README asks users to do): its bond is in the companion's key
store, its address in ``bands.json`` and its GATT handles in ``gatt.json``."""
KNOWN_CONDITIONS = (KNOWN, KNOWN_PAIRED)
"""The conditions judged against :data:`TARGET_EVENTS`."""
TRANSPORTS = ("ble", KNOWN, KNOWN_PAIRED, "serial")
REPEATS = {"ble": 3, KNOWN: 5, KNOWN_PAIRED: 5, "serial": 3}
"""Measured runs of each command per condition: more for the two judged against the targets, whose medians the
verdicts rest on (the wait for the band's advertisement varies by a connection event or two)."""
PAIRING_WINDOW_S = 60
"""``handcue-sim --pairing-window``: the band accepts a new pairing this long after its start (the one ``handcue pair`` comes first)."""
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
BACKGROUND = ("subscribe to TX", "MTU exchange", "read pairing state", "robust caching (Client Supported Features)", "GATT handles from the cache")
"""Link phases nobody waits for: they run behind the first requests."""
REST = "in no nested phase"
"""Under a parent phase, the row of its time in none of its nested phases (the hand-overs between them): with it, a
parent's nested rows add up to the parent's row."""
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
of their parent, shown as *parent › phase*, with a row *parent › {REST}* for the parent's time outside them), the phases *after the link* (disconnect,
closing the bumble host and the event loop, printing the result), *exit* (from the probe's exit handler to the
parent seeing the process end: the interpreter's exit) and *other*, what no phase covers (click parsing the
arguments, the gaps between phases). Before and after the link, time that two phases share (or that a phase of
the link reaches into) is counted once, in the row of the phase that started first (the link's own phases last).
The *MTU exchange* runs from the connection to the ATT MTU update (the band asks for its MTU itself, at
once). Medians of the runs ({REPEATS[KNOWN]} of each command for a known band, paired or not, whose medians the
verdicts rest on; {REPEATS['ble']} on first use and over serial); the band keeps running between commands, as a band does.

Bytecode: this repository's test environment sets `PYTHONDONTWRITEBYTECODE`, which would make every command
compile the companion's modules from source (20-40 ms more); an installed package has its bytecode written at
install time, so the commands run with a bytecode cache of the benchmark's own (`PYTHONPYCACHEPREFIX`),
filled by one unmeasured run of each command first.

Over BLE the companion is measured three times, each against a band of its own (a new simulator) and with
config and cache folders of its own (`XDG_CONFIG_HOME`, `XDG_CACHE_HOME`): on first use (its `bands.json` and
GATT cache emptied before every command, so a scan finds the band and its HandCue service is discovered); for a
band used before, not paired (its address and GATT handles remembered by one `handcue info` first, so it connects
without a scan and one Database Hash read proves the cached handles); and for a band used before and **paired**,
as README asks users to do (the simulator started with `--pairing-window {PAIRING_WINDOW_S}`, the button press
that opens pairing; then `handcue pair --to ble:{BAND}` and one `handcue info`, unmeasured; the benchmark checks
that the companion's folders then hold the bond, `bands.json` and `gatt.json`; the window is still open while the
commands run, which changes only a bit of the pairing state the companion reads). A paired band takes commands that
change its state only from paired devices over an encrypted link, so a paired known band's upload and START pay
for encryption with the bond's keys (the phase *encrypt with the bond's keys*, about 2 connection events);
`handcue status` only reads, so its link stays unencrypted. A paired band tracks whether the companion's cached
handles are current (GATT robust caching, SPEC §21.6), so no Database Hash read comes before the first requests.
It is the condition of a user who followed README. The band advertises every 20-30 ms for 30 s after boot or a disconnect.

Targets ({INTERVAL_MS:g} ms link, a known band, judged for the unpaired and the paired one alike, side by side): upload
of the full routine in at most *the process start* plus
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
            if transport == KNOWN_PAIRED:  # the button press README asks for before `handcue pair`
                args += ["--pairing-window", str(PAIRING_WINDOW_S)]
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


def partition_rows(out: dict[str, float]) -> float:
    """The seconds of the rows before and after the link (top-level phases only: a nested row is part of its parent's)."""
    return sum(value for key, value in out.items() if key.startswith((f"{BEFORE}: ", f"{AFTER}: ")) and NESTED not in key)


def covered(intervals: list[tuple[float, float]]) -> float:
    """Seconds in the union of ``intervals``."""
    total, until = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > until:
            total += end - max(start, until)
            until = end
    return total


def analyse(record: dict[str, Any], spawned: float, ended: float) -> dict[str, float]:
    """Seconds per row of one command's phases: every millisecond of ``total`` in exactly one of
    START, the top-level phases before the link, SPAN, the top-level phases after it, EXIT and OTHER;
    the phases within SPAN (top-level and nested) are reported beside it.

    Before and after the link a top-level phase's row holds only the time no earlier phase there holds already
    (phases that overlap there, or a phase reaching into the link, are not counted twice).  A nested phase's row
    is named by its whole path (*parent › child › grandchild*, prefixed like its top-level ancestor's row when that
    lies before or after the link); each parent with nested phases also gets a row *parent ›* :data:`REST`, its
    time in none of them, so that a parent's nested rows add up to its own."""
    phases = [(name, start, end, pid, parent) for name, start, end, pid, parent, _ in record["phases"]]
    by_id = {pid: (name, start, end, parent) for name, start, end, pid, parent in phases}

    def parent_of(parent: int | None) -> int | None:
        return parent if parent is not None and parent in by_id else None

    top = [p for p in phases if parent_of(p[4]) is None]
    out: dict[str, float] = defaultdict(float)
    seen: dict[str, float] = {}
    """When each row's first phase started: the rows are returned in that order."""

    def add(key: str, seconds: float, at: float) -> None:
        out[key] += seconds
        seen[key] = min(seen.get(key, at), at)

    out[START] = record["started"] - spawned
    out[EXIT] = ended - record["exited"]
    out[TOTAL] = ended - spawned
    starts = [start for name, start, _, _, _ in top if name.startswith(LINK_STARTS)]
    answers = [end for name, _, end, _, _ in top if name in REQUESTS]
    span_start = min(starts) if starts else min((start for name, start, _, _, _ in top if name in REQUESTS), default=ended)
    span_end = max(answers) if answers else span_start
    out[SPAN] = span_end - span_start
    place: dict[int, str] = {}
    """Per top-level phase: the prefix of its rows (before or after the link) or "" (on the link)."""
    for name, start, end, pid, _ in sorted(top, key=lambda p: p[1]):  # rows in the order the phases started
        if end <= span_start + 1e-6:
            place[pid] = f"{BEFORE}: "
        elif start >= span_end - 1e-6:
            place[pid] = f"{AFTER}: "
        else:
            place[pid] = ""
            add(name, end - start, start)  # on the link: shown beside SPAN, overlapping each other
    # Before and after the link: each phase's time that no phase counted already holds; first the phases wholly
    # there (by start), then the parts of phases on the link that reach out of it (a pairing read cancelled by the
    # disconnect), which get only what is left.
    sides = {f"{BEFORE}: ": (record["started"], span_start), f"{AFTER}: ": (span_end, record["exited"])}
    taken: dict[str, list[tuple[float, float]]] = {prefix: [] for prefix in sides}
    for name, start, end, pid, _ in sorted(top, key=lambda p: (place[p[3]] == "", p[1])):
        for prefix, (low, high) in sides.items():
            first, last = max(start, low), min(end, high)
            if place[pid] != prefix and last <= first:
                continue
            part = (first, max(last, first))
            add(f"{prefix}{name}", covered([*taken[prefix], part]) - covered(taken[prefix]), start)
            taken[prefix].append(part)

    def ancestry(pid: int) -> tuple[int, str]:
        """The top-level ancestor of a phase and the phase's path of names from it."""
        name, _, _, parent = by_id[pid]
        up = parent_of(parent)
        if up is None:
            return pid, name
        ancestor, path = ancestry(up)
        return ancestor, f"{path}{NESTED}{name}"

    children: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for _name, start, end, pid, parent in sorted(phases, key=lambda p: p[1]):
        up = parent_of(parent)
        if up is None:
            continue
        ancestor, path = ancestry(pid)
        add(f"{place[ancestor]}{path}", end - start, start)
        children[up].append((start, end))
    for pid, spans in children.items():  # each parent: its time in none of its nested phases (after them in the order)
        _, start, end, _ = by_id[pid]
        ancestor, path = ancestry(pid)
        inside = covered([(max(a, start), min(b, end)) for a, b in spans if min(b, end) > max(a, start)])
        add(f"{place[ancestor]}{path}{NESTED}{REST}", max((end - start) - inside, 0.0), max(a for a, _ in spans) + 1e-9)
    out[OTHER] = out[TOTAL] - (out[START] + out[SPAN] + out[EXIT] + partition_rows(out))
    fixed = [START, SPAN, EXIT, TOTAL, OTHER]
    return {key: out[key] for key in [*fixed, *sorted(seen, key=lambda key: seen[key])]}


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


def bonded(bonds: Path, address: str) -> bool:
    """Whether the companion's key store (bumble's JSON key store: namespace -> address -> keys) holds keys for ``address``."""
    try:
        document = json.loads(bonds.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(isinstance(keys, dict) and any(key.split("/")[0].upper() == address.upper() for key in keys) for keys in document.values())


def measure(transport: str, commands: tuple[str, ...], repeats: int, bytecode: str) -> tuple[dict[str, list[dict[str, float]]], dict[str, float]]:
    """Each command ``repeats`` times, and the process-start floors; over ``ble`` as on first use (no
    remembered address: a scan), over ``ble-known`` with the band's address remembered by one command before,
    over ``ble-known-paired`` the same after pairing with the band (one `handcue pair` before)."""
    if transport == "ble":
        commands = tuple(command for command in commands if command in FIRST_USE_COMMANDS)
    runs: dict[str, list[dict[str, float]]] = {command: [] for command in commands}
    with Sim(transport) as sim, tempfile.TemporaryDirectory() as config_home, tempfile.TemporaryDirectory() as cache_home:
        env = child_environment(config_home, cache_home, bytecode)
        bands = Path(config_home) / "handcue" / "bands.json"
        gatt = Path(cache_home) / "handcue" / "gatt.json"
        bonds = Path(config_home) / "handcue" / "ble" / "bonds.json"
        if transport == KNOWN_PAIRED:
            probe_command(["pair", *sim.options], env)  # unmeasured: bonds with the band, within its pairing window
        probe_command(["info", *sim.options], env)  # unmeasured: remembers the band
        if transport in KNOWN_CONDITIONS and (not bands.exists() or not gatt.exists()):
            raise RuntimeError("handcue info did not remember the band's address and GATT handles")
        if (transport == KNOWN_PAIRED) != bonded(bonds, sim.band_address):
            raise RuntimeError(f"the companion's key store {'lacks' if transport == KNOWN_PAIRED else 'holds'} a bond with {sim.band_address} ({bonds})")
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


CONDITION_TEXT = {
    "ble": "first use (a scan finds the band, its service is discovered)",
    KNOWN: "a band used before, not paired (address and GATT handles remembered)",
    KNOWN_PAIRED: "a band used before and paired (bond, address and GATT handles remembered)",
}


def label_of(key: str, group: int) -> str:
    """A row's label in a phase table: without its before/after prefix, nested rows indented, overlapped ones marked."""
    label = key.split(": ", 1)[1] if group in (1, 4) else key
    if key in (TOTAL, SPAN):
        return f"**{key}**"
    if group == 3 or NESTED in label:
        return f"&nbsp;&nbsp;{label}" + (" (overlapped)" if label.startswith(BACKGROUND) and NESTED not in label else "")
    return label


def order(key: str) -> tuple[int, str]:
    """A row's group in a phase table: process start, before the link, on the link, its phases, after it, exit, other, total."""
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


def phase_table(runs: dict[str, list[dict[str, float]]]) -> str:
    """Median per row and command; the link's rows also in connection events."""
    event = INTERVAL_MS / 1000.0
    keys: list[str] = []
    for command_runs in runs.values():
        for r in command_runs:
            keys += [key for key in r if key not in keys]
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
        table.append([label_of(key, group), *cells])
    return md_table(header, table)


def side_by_side(results: dict[str, tuple[dict[str, list[dict[str, float]]], dict[str, float]]]) -> str:
    """The known band's commands, unpaired and paired, against the targets: link events, total and both verdicts."""
    event = INTERVAL_MS / 1000.0
    table = []
    for command in COMMANDS:
        for transport in KNOWN_CONDITIONS:
            if transport not in results or command not in results[transport][0] or command not in TARGET_EVENTS:
                continue
            command_runs, floors = results[transport][0][command], results[transport][1]
            total, events = median([r[TOTAL] for r in command_runs]), TARGET_EVENTS[command]
            cells = []
            for name in (INTERPRETER, FLOOR):
                margin = floors[name] + events * event - total
                cells.append(f"met, {ms(margin)} to spare" if margin >= 0 else f"MISSED by {ms(-margin)} ({-margin / event:.1f} ev)")
            on_link = median([r.get(SPAN, 0.0) for r in command_runs])
            table.append([f"`handcue {command}`", "paired" if transport == KNOWN_PAIRED else "not paired", f"{on_link / event:.1f}",
                          ms(total), f"{events}", *cells])
    header = ["command", "band", "on the link (ev)", "total", "target (ev)", f"vs {INTERPRETER}", f"vs {FLOOR}"]
    return md_table(header, table, "llrrrll")


def run(*, transports: tuple[str, ...] = TRANSPORTS, commands: tuple[str, ...] = COMMANDS, repeats: int | None = None) -> Report:
    """Measure ``commands`` under each of ``transports`` (``ble``: first use, :data:`KNOWN`, :data:`KNOWN_PAIRED`,
    ``serial``), ``repeats`` times each (None: :data:`REPEATS`)."""
    counts = {transport: REPEATS.get(transport, 3) if repeats is None else repeats for transport in transports}
    seconds: dict[str, float] = {}
    results: dict[str, tuple[dict[str, list[dict[str, float]]], dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as bytecode:
        for transport in transports:
            began = time.perf_counter()
            results[transport] = measure(transport, commands, counts[transport], bytecode)
            seconds[transport] = time.perf_counter() - began
    rows: list[Row] = []
    details: list[str] = []
    notes: list[str] = []
    event = INTERVAL_MS / 1000.0
    if any(transport in results for transport in KNOWN_CONDITIONS):
        details.append(f"A known band against the targets ({INTERVAL_MS:g} ms link), not paired and paired side by side (medians; "
                       "*on the link* as in the tables below):\n\n" + side_by_side(results))
    for transport, (runs, floors) in results.items():
        is_ble = transport.startswith("ble")
        where = (f"BLE, paced link {INTERVAL_MS:g} ms / {PACKETS} packets / {PHY} (ev = connection events), {CONDITION_TEXT[transport]}" if is_ble
                 else f"serial, pty at {BAUD} baud (ev = {INTERVAL_MS:g} ms, for comparison)")
        floor_text = (f"process start measured in the same run: {INTERPRETER} {ms(floors[INTERPRETER])}, "
                      f"{FLOOR} ({', '.join(LIBRARIES['ble' if is_ble else 'serial'])}) {ms(floors[FLOOR])}")
        details.append(f"{where}; median of {counts[transport]} run(s); {floor_text}; this condition took {seconds[transport]:.0f} s of the run:\n\n"
                       + phase_table(runs))
        for command, command_runs in runs.items():
            total = median([r[TOTAL] for r in command_runs])
            before = median([sum(v for k, v in r.items() if k.startswith(f"{BEFORE}: ") and NESTED not in k) for r in command_runs])
            on_link = median([r.get(SPAN, 0.0) for r in command_runs])
            after = median([sum(v for k, v in r.items() if k.startswith(f"{AFTER}: ") and NESTED not in k) + r[EXIT] for r in command_runs])
            value = (f"{ms(total)}: process start {ms(median([r[START] for r in command_runs]))}, before the link {ms(before)}, "
                     f"on the link {ms(on_link)} ({on_link / event:.1f} events), after it and exit {ms(after)}, "
                     f"other {ms(median([r[OTHER] for r in command_runs]))}")
            target = TARGET_EVENTS.get(command) if transport in KNOWN_CONDITIONS else None
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
    said = {"ble": "on first use", KNOWN: "for a band used before", KNOWN_PAIRED: "for a paired band used before"}
    for command in ("upload", "status"):
        present = [(transport, text) for transport, text in said.items() if transport in results and command in results[transport][0]]
        figures = [f"{median([r.get(SPAN, 0.0) for r in results[transport][0][command]]) / event:.1f}{' events' if index == 0 else ''} {text}"
                   for index, (transport, text) in enumerate(present)]
        if len(figures) > 1:
            notes.append(f"`handcue {command}` on the link: {', '.join(figures)}.")
    link = "connect to the known address"
    for transport in KNOWN_CONDITIONS:
        if transport not in results or "status" not in results[transport][0]:
            continue
        status_runs = results[transport][0]["status"]

        def events_of(name: str, runs: list[dict[str, float]] = status_runs) -> float:
            return median([r.get(name, 0.0) for r in runs]) / event

        keys = list(dict.fromkeys(key for r in status_runs for key in r))
        inside = [key.split(NESTED, 1)[1] for key in keys if key.startswith(f"{link}{NESTED}") and NESTED not in key.split(NESTED, 1)[1]]
        parts = ", ".join(f"{name} {events_of(f'{link}{NESTED}{name}'):.1f}" for name in inside if events_of(f"{link}{NESTED}{name}") >= 0.05)
        # Link phases besides the connect, the requests and the ones behind them (e.g. an encryption of its own).
        others = [key for key in keys if order(key)[0] == 3 and NESTED not in key and key != link and key not in REQUESTS and not key.startswith(BACKGROUND)]
        extra = "".join(f", {key} {events_of(key):.1f}" for key in others if events_of(key) >= 0.05)
        notes.append(f"Where a {'paired ' if transport == KNOWN_PAIRED else ''}known band's `handcue status` spends its {events_of(SPAN):.1f} events on the link: "
                     f"{link} {events_of(link):.1f} ({parts}; *connect* is the wait for the band's next advertisement){extra}, "
                     f"then INFO and STATUS {events_of('INFO'):.1f} (written in the next event with the subscription's CCCD write, whose "
                     f"answer they do not wait for, and answered in the event after: a request sent just after an event takes two). "
                     f"The target allows {TARGET_EVENTS['status']} events for everything after the process start.")
    data = {"runs": {transport: runs for transport, (runs, _) in results.items()}, "floors": {transport: floors for transport, (_, floors) in results.items()},
            "seconds": seconds}
    return Report(NAME, TITLE, METHOD, rows, "\n\n".join(details), notes, data=data)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.cold_start", description="Run the cold-start benchmark alone and print it (nothing is written).")
    parser.add_argument("--transports", default=",".join(TRANSPORTS), help=f"Comma-separated subset of: {', '.join(TRANSPORTS)}.")
    parser.add_argument("--repeats", type=int, help=f"Measured runs of each command per condition (default: {REPEATS}).")
    options = parser.parse_args()
    report = run(transports=tuple(t.strip() for t in options.transports.split(",")), repeats=options.repeats)
    print(report.details)
    print()
    for row in report.rows:
        print(f"{row.metric}: {row.value}" + (f"  [{row.verdict}]" if row.verdict else ""))
    for note in report.notes:
        print(f"note: {note}")
    print(f"seconds per condition: {', '.join(f'{t} {s:.0f} s' for t, s in report.data['seconds'].items())}")
