"""Band commands of the ``handcue`` CLI: info, upload, start ... follow, demo.

Each command opens the band named by ``--to`` (or ``HANDCUE_ADDRESS``), does
one job with timeouts on every wait, and closes the link.  The work is done by
:class:`~companion.client.BandClient`; these commands render what it returns.
``asyncio.run`` lives at this edge (:func:`companion.cli_common.run`);
everything below is async.  :mod:`companion.cli` adds :data:`COMMANDS` to its
group.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click

from protocol.errors import HandCueError

from .cli_common import emit_json, run

if TYPE_CHECKING:  # the CLI imports asyncio and the protocol stack only when a command runs
    import asyncio

    from .client import BandClient, BandStatus
    from .discovery import FoundBand

T = TypeVar("T")

address_option = click.option("--to", "address", envvar="HANDCUE_ADDRESS", required=True, metavar="ADDR",
                              help="Band address: serial:/dev/ttyUSB0[?baud=N] or ble:HandCue-1A2B (env HANDCUE_ADDRESS).")
timeout_option = click.option("--timeout", type=click.FloatRange(min=0.1), default=3.0, show_default=True,
                              help="Seconds to wait for each answer from the band.")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
hci_option = click.option("--hci", envvar="HANDCUE_HCI", metavar="TRANSPORT",
                          help="Route BLE through bumble on this HCI transport instead of the OS stack (env HANDCUE_HCI).")


async def with_band(address: str, timeout: float, job: Callable[[BandClient], Awaitable[T]], hci: str | None = None) -> T:
    """Run ``job`` on the band at ``address``; BLE goes through bumble on ``hci`` if given."""
    from .ble import ble_backend_for
    from .client import BandClient

    async with ble_backend_for(hci) as ble, BandClient.open(address, timeout=timeout, ble=ble) as client:
        return await job(client)


def describe_status(status: BandStatus) -> str:
    """One line a person can read at a glance."""
    from protocol.constants import BandState

    from .render import clock
    from .routine import format_ms

    if status.state == BandState.IDLE:
        return "idle"
    if status.state == BandState.FINISHED:
        return f"finished after {format_ms(status.elapsed_ms)} ({status.cues} cues)"
    where = " ".join(part for part in (
        f"{status.hand} hand" if status.hand else "",
        f"{status.finger} finger" if status.finger else "",
    ) if part)
    parts = [
        f"[{clock(status.elapsed_ms)[:-4]} / {clock(status.total_ms)[:-4]}]",
        "" if status.state == BandState.RUNNING else "unknown state" if status.state is None else status.state.name.lower(),
        f"step {status.step} {status.technique.text_id if status.technique is not None else ''}".strip(),
        where,
        f"{format_ms(status.step_remaining_ms // 1000 * 1000)} left in step",
        f"{format_ms(status.remaining_ms // 1000 * 1000)} left",
        f"felt: {status.last_cue.name.lower()}" if status.last_cue is not None else "",
    ]
    return " | ".join(part for part in parts if part)


# --------------------------------------------------------------------------
# Queries and commands


@click.command()
@address_option
@timeout_option
@json_option
@hci_option
def info(address: str, timeout: float, as_json: bool, hci: str | None) -> None:
    """Show the band's id, firmware, battery, limits and active routine."""
    band = run(with_band(address, timeout, lambda c: c.info(), hci))
    if as_json:
        emit_json(band.to_json())
        return
    routine = f"{band.routine_name or '(unnamed)'} ({band.routine_size} bytes, CRC-32 0x{band.routine_crc32:08X})" if band.routine_crc32 is not None else "none"
    click.echo(f"band {band.band_id:04X}: firmware {band.firmware}, protocol {band.protocol_version}, battery {band.battery}%, {band.state}")
    click.echo(f"routine: {routine}")
    click.echo(f"limits: table {band.max_table} bytes, frame {band.max_frame} bytes, upload window {band.window}")


def _control(name: str, help_text: str, action: Callable[[BandClient], Awaitable[BandStatus]]) -> click.Command:
    @click.command(name=name, help=help_text)
    @address_option
    @timeout_option
    @json_option
    @hci_option
    def command(address: str, timeout: float, as_json: bool, hci: str | None) -> None:
        status = run(with_band(address, timeout, action, hci))
        emit_json(status.to_json()) if as_json else click.echo(describe_status(status))

    return command


CONTROLS = (
    _control("start", "Start the band's routine from the beginning.", lambda band: band.start()),
    _control("pause", "Pause the routine; the remaining time is kept.", lambda band: band.pause()),
    _control("resume", "Resume a paused routine.", lambda band: band.resume()),
    _control("skip", "Skip the rest of the current step.", lambda band: band.skip()),
    _control("stop", "Stop the routine.", lambda band: band.stop()),
    _control("status", "Show what the band is doing.", lambda band: band.status()),
)


@click.command()
@address_option
@timeout_option
@hci_option
def erase(address: str, timeout: float, hci: str | None) -> None:
    """Remove the band's routine."""
    run(with_band(address, timeout, lambda c: c.erase(), hci))
    click.echo("erased")


@click.command()
@click.option("--timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True, help="Seconds to listen.")
@json_option
@hci_option
def scan(timeout: float, as_json: bool, hci: str | None) -> None:
    """List bands advertising nearby (name, address, RSSI, battery)."""
    bands = run(find_bands(timeout, hci))
    if as_json:
        emit_json([band.to_json() for band in bands])
        return
    if not bands:
        click.echo(f"no HandCue band found in {timeout:g} s")
    for band in bands:
        battery = f"{band.battery}%" if band.battery is not None else "?"
        click.echo(f"{band.name:<16} {band.address}  RSSI {band.rssi} dBm  battery {battery}  -> --to {band.band_address}")


async def find_bands(timeout: float, hci: str | None) -> list[FoundBand]:
    from .ble import ble_backend_for
    from .discovery import scan_bands

    async with ble_backend_for(hci) as ble:
        return await scan_bands(timeout, ble)


# --------------------------------------------------------------------------
# Upload


class Progress:
    """Confirmed-bytes progress: a bar with rate and ETA on a terminal, plain lines otherwise."""

    def __init__(self, label: str, stream: Any = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.bar: Any = None
        self.last_decile = -1
        self.shown = 0

    def __call__(self, confirmed: int, total: int) -> None:
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


async def upload_table(client: BandClient, data: bytes, label: str) -> Any:
    from .routine import format_ms

    progress = Progress(label)
    started = time.perf_counter()
    try:
        result = await client.upload(data, progress)
    finally:
        progress.close()
    elapsed = time.perf_counter() - started
    resumed = f", resumed at byte {result.resumed_from}" if result.resumed_from else ""
    click.echo(f"uploaded {result.size} bytes in {elapsed:.2f} s (CRC-32 0x{result.crc32:08X}, {result.frames_sent} frames, "
               f"{result.retransmissions} retransmitted{resumed}); routine lasts {format_ms(result.total_ms)}")
    return result


@click.command()
@click.argument("routine_or_table")
@address_option
@timeout_option
@hci_option
@click.option("--no-names", is_flag=True, help="Compile without the name section.")
def upload(routine_or_table: str, address: str, timeout: float, hci: str | None, no_names: bool) -> None:
    """Upload a routine (compiled first) or a .hcue table to the band.

    An interrupted upload of the same table continues where the band stopped.
    """
    from .tables import load_table_or_routine

    data = load_table_or_routine(routine_or_table, names=not no_names)
    run(with_band(address, timeout, lambda c: upload_table(c, data, f"upload to {address}"), hci))


# --------------------------------------------------------------------------
# Follow


async def follow_band(client: BandClient, out: TextIO | None = None) -> BandStatus:
    """Render :meth:`BandClient.follow` until the routine finishes; returns the final status.

    On a terminal one line is rewritten in place; otherwise a line is printed
    for each change of step, iteration, cue or state.
    """
    out = out or sys.stdout
    live = out.isatty()
    shown: tuple[object, ...] = ()
    status: BandStatus | None = None
    try:
        async for status in client.follow():
            line = describe_status(status)
            change = (status.step, status.iteration, status.last_cue, status.state, status.cues)
            if live:
                out.write("\r\x1b[K" + line)
            elif change != shown:
                out.write(line + "\n")
            out.flush()
            shown = change
    finally:
        if live and status is not None:
            out.write("\n")
    assert status is not None  # follow() yields at least once or raises
    return status


@click.command()
@address_option
@timeout_option
@hci_option
def follow(address: str, timeout: float, hci: str | None) -> None:
    """Live view of the session; exits 0 when the routine finishes."""
    run(with_band(address, timeout, lambda c: follow_band(c), hci))


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


def table_step_plays(data: bytes) -> int:
    from protocol.table import LoopRecord, Node, build_tree, decode_table

    def plays(nodes: list[Node]) -> int:
        return sum(node.record.count * (plays(node.children) if isinstance(node.record, LoopRecord) else 1) for node in nodes)

    return plays(build_tree(decode_table(data).records))


async def demo_session(routine: str, speed: float, baud: int | None, ble: bool, timeout: float) -> None:
    from .ble import ble_backend_for
    from .client import BandClient
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
                band = await client.info()
                click.echo(f"band {band.band_id:04X}, firmware {band.firmware}, battery {band.battery}%")
                await upload_table(client, data, "upload")
                await client.start()
                started = time.perf_counter()
                final = await follow_band(client)
                wall = time.perf_counter() - started
            click.echo(f"summary: {table_step_plays(data)} steps, {final.cues} cues, "
                       f"routine {format_ms(final.elapsed_ms)} played in {wall:.1f} s (x{speed:g})")
        finally:
            if process.returncode is None:
                process.terminate()
                await process.wait()


@click.command()
@click.option("--routine", default="full-hand-massage", show_default=True, help="Routine file or shipped id to play.")
@click.option("--speed", type=click.FloatRange(min=0.1), default=40.0, show_default=True, help="How many times faster than real time.")
@click.option("--baud", type=click.IntRange(min=300), help="Pace the simulated serial line to this baud rate.")
@click.option("--ble", is_flag=True, help="Run the demo over Bluetooth LE (bumble virtual link) instead of serial.")
@timeout_option
def demo(routine: str, speed: float, baud: int | None, ble: bool, timeout: float) -> None:
    """Start a simulated band, upload a routine, play it and follow it live."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run(demo_session(routine, speed, baud, ble, timeout))


COMMANDS = (info, *CONTROLS, erase, scan, upload, follow, demo)
