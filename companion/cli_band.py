"""Band commands of the ``handcue`` CLI: info, upload, start ... follow, demo.

Each command opens the band named by ``--to`` (or ``HANDCUE_ADDRESS``), does
one job with timeouts on every wait, and closes the link.  The work is done by
:class:`~companion.client.BandClient`; these commands render what it returns.
``asyncio.run`` lives at this edge (:func:`companion.cli_common.run`);
everything below is async.  :mod:`companion.cli` adds :data:`COMMANDS` to its
group.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click

from protocol.constants import BootOutcome
from protocol.errors import HandCueError

from .cli_common import (
    address_option,
    ble_options,
    command_phases,
    complete_routine,
    emit_json,
    json_option,
    quiet,
    run,
    say,
    targets_option,
    timeout_option,
)
from .cli_fleet import is_fleet

if TYPE_CHECKING:  # the CLI imports asyncio and the protocol stack only when a command runs
    import asyncio

    from .client import BandClient, BandInfo, BandStatus
    from .discovery import FoundBand
    from .live import KeyReader

T = TypeVar("T")



async def with_band(address: str, timeout: float | None, job: Callable[[BandClient], Awaitable[T]], hci: str | None = None,
                    ble_backend: str | None = None, *, needs_trust: bool = True) -> T:
    """Run ``job`` on the band at ``address``; BLE goes through the backend ``ble_backend`` names, else bumble on ``hci`` if given.

    ``needs_trust=False`` for a job that only reads INFO and STATUS: a BLE link to a band this computer is
    paired with then stays unencrypted, which saves the encryption's round trips (:meth:`BandClient.open`).

    Each phase (imports, scan, connect, MTU, discovery, each request, disconnect) is recorded in the
    command's recorder (:func:`~companion.cli_common.command_phases`); ``-v`` prints them when the command ends.
    """
    from .phases import imports

    phases = command_phases()
    is_ble = address.startswith("ble:")
    with imports(phases, "imports (companion client)" if is_ble else "imports (companion client, pyserial)", "companion.client",
                 "companion.transport.ble" if is_ble else "companion.transport.serial"):
        from .client import BandClient
        from .config import BleAddressBook, remember_bands

        if is_ble:
            from .transport.ble import BleTransport
        else:
            from .transport import serial  # noqa: F401  (pyserial: timed here, not inside BandClient.open)
    async with contextlib.AsyncExitStack() as stack:
        ble = None
        if is_ble:
            bumble = hci is not None and not ble_backend
            with imports(phases, "imports (bleak, bumble)" if bumble else "imports (bleak)", "bleak", *(("companion.ble.bumble_backend",) if bumble else ())):
                import bleak  # noqa: F401

                from .ble import ble_backend_for

                if bumble:
                    from .ble import bumble_backend  # noqa: F401
            ble = await stack.enter_async_context(ble_backend_for(hci, backend=ble_backend, phases=phases))
        client = BandClient.open(address, timeout=timeout, ble=ble, needs_trust=needs_trust)
        client.transport.phases = phases
        if is_ble:
            assert isinstance(client.transport, BleTransport)
            client.transport.address_book = BleAddressBook()  # the next command connects without a scan
        await client.connect()
        try:
            remember_bands([address])  # offered by shell completion of --to
            return await job(client)
        finally:
            with phases.phase("disconnect"):
                await client.close()


def describe_status(status: BandStatus, numbers: Mapping[int, int] | None = None) -> str:
    """One line a person can read at a glance.

    ``numbers`` (record index -> step number, :func:`companion.render.step_numbers`)
    numbers the step as the card and ``inspect`` do; without it the step is named only.
    """
    from protocol.constants import BandState
    from protocol.messages import code_text

    from .durations import format_ms
    from .render import clock, left_text

    if status.state == BandState.IDLE:
        return "idle"
    if status.state == BandState.FINISHED:
        return f"finished after {format_ms(status.elapsed_ms)} ({status.cues} cues)"
    where = " ".join(part for part in (
        f"{status.hand} hand" if status.hand else "",
        f"{status.finger} finger" if status.finger else "",
    ) if part)
    step = " ".join(part for part in (
        f"step {numbers[status.step]}" if numbers and status.step is not None and status.step in numbers else "",
        code_text(status, "technique") or "",
    ) if part)
    felt = f"felt: {code_text(status, 'last_cue')}" if code_text(status, "last_cue") else ""
    # Acknowledgement waits add to the session's length: its expected end is elapsed + remaining (the table's total without waits).
    elapsed = f"[{clock(status.elapsed_ms)[:-4]} / {clock(max(status.total_ms, status.elapsed_ms + status.remaining_ms))[:-4]}]"
    if status.state == BandState.WAITING:  # SPEC §12.10: the band repeats a cue until the wearer presses, at most until it gives up
        gives_up = f"gives up in {left_text(status.step_remaining_ms)}"
        if status.step is None:
            parts = [elapsed, "waiting for a press of the band's button", "DONE: a press confirms the routine was done", gives_up, felt]
        else:
            parts = [elapsed, "waiting for a press of the band's button", f"START of {step}" if step else "START of the next step", where, gives_up,
                     f"{left_text(status.remaining_ms)} left", felt]
        return " | ".join(part for part in parts if part)
    parts = [
        elapsed,
        "" if status.state == BandState.RUNNING else code_text(status, "state") or "",
        step,
        where,
        f"{left_text(status.step_remaining_ms)} left in step",
        f"{left_text(status.remaining_ms)} left",
        felt,
    ]
    return " | ".join(part for part in parts if part)


# --------------------------------------------------------------------------
# Queries and commands


@click.command()
@address_option
@timeout_option()
@json_option
@ble_options
def info(address: str, timeout: float | None, as_json: bool, hci: str | None, ble_backend: str | None) -> None:
    """Show the band's id, firmware, battery, limits, active routine and who may command it."""

    async def job(client: BandClient) -> tuple[Any, str]:
        from .ble.pairing import security_line

        info = await client.hello_info() or await client.info()  # the hello asked already: no second round trip
        return info, await security_line(client.transport)

    band, security = run(with_band(address, timeout, job, hci, ble_backend))
    if as_json:
        emit_json({**band.to_json(), "security": security})
        return
    routine = f"{band.routine_name or '(unnamed)'} ({band.routine_size} bytes, CRC-32 0x{band.routine_crc32:08X})" if band.routine_crc32 is not None else "none"
    click.echo(f"band {band.band_id:04X}: firmware {band.firmware}, protocol {band.protocol_version}, battery {band.battery}%, {band.state_text}")
    click.echo(f"routine: {routine}")
    click.echo(f"storage: {storage_line(band)}")
    click.echo(f"limits: table {band.max_table} bytes, frame {band.max_frame} bytes, upload window {band.window}")
    click.echo(f"security: {security}")


BOOT_EXPLANATIONS = {
    BootOutcome.JOURNAL_DAMAGED: "damaged journal entries were skipped; the routine shown verified",
    BootOutcome.RECOVERED_PREVIOUS: "the newest routine failed its check; the one before it is active",
    BootOutcome.ACTIVE_SLOT_CORRUPT: "the newest routine failed its check and no earlier one is intact; upload it again",
    BootOutcome.JOURNAL_LOST: "the band's routine journal is unreadable, so it holds no routine; upload it again",
}
"""What ``handcue info`` adds to a boot outcome that is not the ordinary blank or intact flash."""


def storage_line(band: BandInfo) -> str:
    """The band's boot outcome for people, with what it means when the flash was damaged or a write was cut."""
    why = BOOT_EXPLANATIONS.get(band.boot) if band.boot is not None else None
    return f"{band.boot_text} ({why})" if why else band.boot_text


async def step_numbers_of(client: BandClient) -> dict[int, int] | None:
    """Record index -> step number of the band's routine, if this computer uploaded it (the table is cached by CRC-32)."""
    info = await client.hello_info() or await client.info()  # the hello's INFO names the routine: no second round trip
    with client.transport.phases.phase("number the steps as the card does (imports the renderer)"):
        from protocol.table import decode_table

        from .config import known_table
        from .render import step_numbers

        crc32 = info.routine_crc32
        data = known_table(crc32) if crc32 is not None else None
        return step_numbers(decode_table(data)) if data is not None else None


def _control(name: str, help_text: str, action: Callable[..., Awaitable[BandStatus]], *options: Callable[[Any], Any], several: bool = False,
             reads_only: bool = False) -> click.Command:
    """A session command: ``action(band, **values of options)``; with ``several``, ``--to`` may name several bands (or a pattern).

    ``reads_only``: ``action`` sends only INFO and STATUS, so the link needs no trust (:func:`with_band`).
    """

    async def job(client: BandClient, as_json: bool, extra: dict[str, Any]) -> tuple[BandStatus, dict[int, int] | None]:
        status = await action(client, **extra)
        return status, (await step_numbers_of(client) if status.step is not None and not as_json else None)

    @click.command(name=name, help=help_text)
    @(targets_option if several else address_option)
    @timeout_option()
    @json_option
    @ble_options
    def command(timeout: float | None, as_json: bool, hci: str | None, ble_backend: str | None, **extra: Any) -> None:
        targets: tuple[str, ...] = extra.pop("targets") if several else (extra.pop("address"),)
        if several and is_fleet(targets):
            from .cli_fleet import fleet_command

            sys.exit(run(fleet_on_backend(hci, ble_backend, lambda ble: fleet_command(list(targets), name, ble, timeout=timeout, as_json=as_json))))
        status, numbers = run(with_band(targets[0], timeout, lambda c: job(c, as_json, extra), hci, ble_backend, needs_trust=not reads_only))
        emit_json(status.to_json()) if as_json else click.echo(describe_status(status, numbers))

    for option in options:
        command = option(command)
    return command


def _skip(band: BandClient, whole_step: bool) -> Awaitable[BandStatus]:
    from protocol.constants import SkipScope

    return band.skip(SkipScope.STEP if whole_step else SkipScope.ITERATION)


CONTROLS = (
    _control("start", "Start the band's routine from the beginning (on every band --to names).", lambda band: band.start(), several=True),
    _control("pause", "Pause the routine; the remaining time is kept.", lambda band: band.pause()),
    _control("resume", "Resume a paused routine.", lambda band: band.resume()),
    _control("skip", "Skip to the next finger, hand or round (with --step: past the whole step).", _skip,
             click.option("--step", "whole_step", is_flag=True, help="Skip the whole step, with every finger or hand left in it.")),
    _control("stop", "Stop the routine (on every band --to names).", lambda band: band.stop(), several=True),
    _control("status", "Show what the band is doing.", lambda band: band.status(), reads_only=True),
)


@click.command()
@address_option
@timeout_option()
@json_option
@ble_options
def erase(address: str, timeout: float | None, as_json: bool, hci: str | None, ble_backend: str | None) -> None:
    """Remove the band's routine."""
    run(with_band(address, timeout, lambda c: c.erase(), hci, ble_backend))
    emit_json({"erased": True, "address": address}) if as_json else say("erased")


@click.command()
@timeout_option(5.0, "Seconds to listen.")
@json_option
@ble_options
def scan(timeout: float, as_json: bool, hci: str | None, ble_backend: str | None) -> None:
    """List bands advertising nearby (name, address, RSSI, battery)."""
    from .config import remember_bands
    from .errors import TransportError

    try:
        bands = run(find_bands(timeout, hci, ble_backend))
    except TransportError as exc:
        if hci or ble_backend:
            raise
        raise TransportError(f"{exc}\n{NO_BLUETOOTH_HINT}") from exc
    remember_bands([band.band_address for band in bands])
    if as_json:
        emit_json([band.to_json() for band in bands])
        return
    if not bands:
        click.echo(f"no HandCue band found in {timeout:g} s")
    for band in bands:
        battery = f"{band.battery}%" if band.battery is not None else "?"
        click.echo(f"{band.name:<16} {band.address}  RSSI {band.rssi} dBm  battery {battery}  -> --to {band.band_address}")


NO_BLUETOOTH_HINT = (
    "scanning needs the operating system's Bluetooth stack (on Linux: BlueZ, reached over D-Bus; is bluetoothd running?), "
    "or --hci (HANDCUE_HCI) to run bumble's own stack on a controller (usb:0) or a simulator (tcp-client:127.0.0.1:9901)"
)


async def find_bands(timeout: float, hci: str | None, ble_backend: str | None = None) -> list[FoundBand]:
    from .ble import ble_backend_for
    from .discovery import scan_bands

    async with ble_backend_for(hci, backend=ble_backend) as ble:
        return await scan_bands(timeout, ble)


# --------------------------------------------------------------------------
# Upload


class Progress:
    """Confirmed-bytes progress: a bar with rate and ETA on a terminal, plain lines otherwise, nothing under ``-q``/``--json``."""

    def __init__(self, label: str, stream: Any = None, silent: bool = False) -> None:
        self.silent = silent
        self.label = label
        self.stream = stream or sys.stderr
        self.bar: Any = None
        self.last_decile = -1
        self.shown = 0

    def __call__(self, confirmed: int, total: int) -> None:
        if self.silent:
            return
        if self.stream.isatty():
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=confirmed, unit="B", unit_scale=True, desc=self.label, file=self.stream, leave=True)
            self.bar.update(confirmed - self.bar.n)
            return
        decile = confirmed * 10 // total
        if decile != self.last_decile:
            self.last_decile = decile
            print(f"{self.label}: {confirmed}/{total} bytes confirmed ({confirmed * 100 // total}%)", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


async def upload_table(client: BandClient, data: bytes, label: str, as_json: bool = False, start: bool = False) -> Any:
    """Upload ``data`` with a progress bar and print the result; with ``start``, START follows at once
    on the same connection and the band's answer is printed (JSON: under ``"started"``)."""
    from .routine import format_ms

    progress = Progress(label, silent=as_json or quiet())
    started = time.perf_counter()
    try:
        result = await client.upload(data, progress)
    finally:
        progress.close()
    elapsed = time.perf_counter() - started
    from .config import remember_table

    remember_table(data)  # lets status and the live line number the steps as the card does
    fields = {"size": result.size, "crc32": f"0x{result.crc32:08X}", "resumed_from": result.resumed_from, "frames_sent": result.frames_sent,
              "retransmissions": result.retransmissions, "total_ms": result.total_ms, "seconds": round(elapsed, 3)}
    if as_json:
        if start:
            try:
                fields["started"] = (await client.start()).to_json()
            except HandCueError as exc:  # the upload stands: say so beside why START failed
                emit_json({**fields, "started": None, "error": str(exc)})
                sys.exit(1)
        emit_json(fields)
        return result
    resumed = f", resumed at byte {result.resumed_from}" if result.resumed_from else ""
    say(f"uploaded {result.size} bytes in {elapsed:.2f} s (CRC-32 0x{result.crc32:08X}, {result.frames_sent} frames, "
               f"{result.retransmissions} retransmitted{resumed}); routine lasts {format_ms(result.total_ms)}")
    playing = await client.start() if start else None  # after the upload's line: a failed START leaves the upload standing, and said
    if playing is not None:
        from protocol.table import decode_table

        from .render import step_numbers

        click.echo(f"started: {describe_status(playing, step_numbers(decode_table(data)))}")
    return result


@click.command()
@click.argument("routine_or_table", metavar="ROUTINE|TABLE", shell_complete=complete_routine)
@targets_option
@timeout_option()
@json_option
@ble_options
@click.option("--no-names", is_flag=True, help="Compile without the name section.")
@click.option("--start", "start", is_flag=True, help="Start the routine as soon as it is on the band (several bands: once all hold it).")
def upload(routine_or_table: str, targets: tuple[str, ...], timeout: float | None, as_json: bool, hci: str | None, ble_backend: str | None,
           no_names: bool, start: bool) -> None:
    """Upload a routine (compiled first) or a .hcue table to the band, or to every band --to names at once.

    An interrupted upload of the same table continues where the band stopped.
    With several bands: one progress line per band, then a summary table; exit 1 if any failed.
    With --start the band plays it at once (one band: on the same connection; several: once all hold it).
    """
    from .phases import loading

    phases = command_phases()
    with loading(phases, "imports (routine compiler)"):
        from .tables import load_table_or_routine
    with phases.phase("load and compile the routine"):
        data = load_table_or_routine(routine_or_table, names=not no_names)
    if is_fleet(targets):
        from .cli_fleet import fleet_upload
        from .config import remember_table

        code = run(fleet_on_backend(hci, ble_backend, lambda ble: fleet_upload(list(targets), data, ble, timeout=timeout, as_json=as_json,
                                                                              silent=quiet(), start=start)))
        remember_table(data)
        sys.exit(code)
    address = targets[0]
    run(with_band(address, timeout, lambda c: upload_table(c, data, f"upload to {address}", as_json, start), hci, ble_backend))


async def fleet_on_backend(hci: str | None, ble_backend: str | None, job: Callable[[Any], Awaitable[int]]) -> int:
    """Run a fleet ``job`` on one BLE backend shared by every band; its exit code."""
    from .ble import ble_backend_for

    async with ble_backend_for(hci, backend=ble_backend) as ble:
        return await job(ble)


# --------------------------------------------------------------------------
# Follow


async def follow_band(client: BandClient, out: TextIO | None = None, *, keys: KeyReader | None = None, console: Any = None) -> BandStatus:
    """Render :meth:`BandClient.follow` until the routine finishes (or the person quits); returns the last status.

    On a terminal one line is kept in place; otherwise a line
    (:func:`describe_status`) is printed for each change of step, iteration,
    cue or state.  With active ``keys`` the person controls the band
    (:func:`companion.live.follow_live`).  Steps are numbered as on the card when this
    computer uploaded the band's routine (:func:`step_numbers_of`), else named only.
    """
    from .live import follow_live

    numbers = await step_numbers_of(client)
    return await follow_live(client, out or sys.stdout, lambda status: describe_status(status, numbers), keys=keys,
                             console=console, numbers=numbers)


async def follow_json(client: BandClient, out: TextIO | None = None) -> BandStatus:
    """``follow --json``: one JSON object per line (JSON Lines) for each change of step, iteration, cue or state.

    The same objects as ``status --json``; the last one is the finished state.
    """
    import json

    out = out or sys.stdout
    shown: tuple[object, ...] = ()
    status: BandStatus | None = None
    async for status in client.follow():
        change = (status.step, status.iteration, status.last_cue, status.state, status.cues)
        if change != shown:
            out.write(json.dumps(status.to_json(), ensure_ascii=False) + "\n")
            out.flush()
            shown = change
    assert status is not None  # follow() yields at least once or raises
    return status


@click.command()
@address_option
@timeout_option()
@json_option
@ble_options
def follow(address: str, timeout: float | None, as_json: bool, hci: str | None, ble_backend: str | None) -> None:
    """Live view of the session; exits 0 when the routine finishes (--json: one JSON object per event).

    On a terminal, keys control the band: space pauses or resumes, n skips to
    the next finger, hand or round, s stops the routine, q quits following
    (the band goes on playing).
    """
    from .live import KeyReader

    # Keys (a terminal) may pause, skip or stop: those need a trusted link; without them following only reads STATUS.
    keys = not as_json and KeyReader.available(sys.stdin)
    run(with_band(address, timeout, lambda c: follow_json(c) if as_json else follow_with_keys(c), hci, ble_backend, needs_trust=keys))


async def follow_with_keys(client: BandClient) -> BandStatus:
    from .live import KeyReader

    async with KeyReader() as keys:
        return await follow_band(client, keys=keys)


# --------------------------------------------------------------------------
# Demo


async def start_simulator(args: list[str], timeout: float = 15.0) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    """Start ``handcue-sim`` and read the lines it prints about its ports."""
    import asyncio

    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "firmware_sim", *args, stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    ports: dict[str, str] = {}
    wanted = {"serial"} if "--serial" in args else set()
    wanted |= {"ble"} if "--hci-server" in args else set()
    try:
        while not wanted <= ports.keys():
            line = (await asyncio.wait_for(process.stdout.readline(), timeout)).decode().strip()
            if not line:
                raise HandCueError(f"the simulator exited (code {await process.wait()}) before opening its ports")
            key, _, value = line.partition(": ")
            ports[key] = value
    except TimeoutError:
        process.kill()
        raise HandCueError(f"the simulator did not report its ports within {timeout:g} s") from None
    return process, ports


async def demo_session(routine: str, speed: float, baud: int | None, ble: bool, timeout: float | None) -> None:
    from protocol.table import decode_table

    from .ble import ble_backend_for
    from .client import BandClient
    from .render import counts_text, step_numbers, step_plays
    from .routine import format_ms
    from .tables import load_table_or_routine

    data = load_table_or_routine(routine)
    with tempfile.TemporaryDirectory(prefix="handcue-demo-") as folder:
        args = ["--clock", "real", "--speed", str(speed), "--flash", str(Path(folder) / "band-flash.bin")]
        hci = None
        if ble:
            from ble_stack.addresses import free_tcp_port

            port = free_tcp_port()
            hci = f"tcp-client:127.0.0.1:{port}"
            args += ["--hci-server", f"tcp-server:127.0.0.1:{port}"]
        else:
            args += ["--serial", "pty"] + (["--baud", str(baud)] if baud else [])
        process, ports = await start_simulator(args)
        try:
            address = "ble:" + ports["ble"].split()[0] if ble else f"serial:{ports['serial']}" + (f"?baud={baud}" if baud else "")
            click.echo(f"simulated band on {address} (speed x{speed:g})")
            async with ble_backend_for(hci) as backend, BandClient.open(address, timeout=timeout, ble=backend) as client:
                band = await client.hello_info() or await client.info()
                click.echo(f"band {band.band_id:04X}, firmware {band.firmware}, battery {band.battery}%")
                await upload_table(client, data, "upload")
                await client.start()
                started = time.perf_counter()
                final = await follow_band(client)
                wall = time.perf_counter() - started
            table = decode_table(data)
            click.echo(f"summary: {counts_text(len(step_numbers(table)), step_plays(table), final.cues)}, "
                       f"routine {format_ms(final.elapsed_ms)} played in {wall:.1f} s (x{speed:g})")
        finally:
            if process.returncode is None:
                process.terminate()
                await process.wait()


@click.command()
@click.option("--routine", default="full-hand-massage", show_default=True, shell_complete=complete_routine, help="Routine file or shipped id to play.")
@click.option("--speed", type=click.FloatRange(min=0.1), default=40.0, show_default=True, help="How many times faster than real time.")
@click.option("--baud", type=click.IntRange(min=300), help="Pace the simulated serial line to this baud rate.")
@click.option("--ble", is_flag=True, help="Run the demo over Bluetooth LE (bumble virtual link) instead of serial.")
@timeout_option()
def demo(routine: str, speed: float, baud: int | None, ble: bool, timeout: float | None) -> None:
    """Start a simulated band, upload a routine, play it and follow it live."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run(demo_session(routine, speed, baud, ble, timeout))


COMMANDS = (info, *CONTROLS, erase, scan, upload, follow, demo)
