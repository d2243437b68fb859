"""``handcue-sim``: run a simulated band as a process.

Examples::

    handcue-sim --serial pty                       # prints "serial: /dev/pts/N"
    handcue-sim --serial pty --flash band.bin --baud 115200
    handcue-sim --load nausea-pc6 --start --clock virtual --trace out.jsonl --exit-on-finish

Ctrl-C and SIGTERM stop it cleanly; flash writes are synchronous, so a stop
never leaves the flash file half-written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import zlib
from pathlib import Path
from typing import IO, Any

import click

from protocol.errors import HandCueError

from .band import Band
from .buttons import BandButton
from .clock import Clock, RealClock, VirtualClock
from .faults import SimulatorFault
from .flash import Flash
from .handler import ProtocolHandler
from .interpreter import RunState
from .storage import FLASH_SIZE, Storage


def load_table(storage: Storage, reference: str) -> None:
    """Store a table (or a routine, compiled) through the normal upload path."""
    from companion.tables import load_table_or_routine

    data = load_table_or_routine(reference)
    offset = storage.begin_upload(len(data), zlib.crc32(data))
    if offset < len(data):
        storage.write_chunk(offset, data[offset:])
    storage.commit()


class TraceWriter:
    """JSON lines of motor events and state changes."""

    def __init__(self, handle: IO[str]) -> None:
        self.handle = handle

    def __call__(self, event: dict[str, Any]) -> None:
        if event["event"] in ("motor", "state"):
            self.handle.write(json.dumps(event) + "\n")
            self.handle.flush()


async def run_band(options: dict[str, Any]) -> int:
    # Signals first: a supervisor may stop us as soon as we print our ports.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    paced = _paced_link(options)  # checked first: pacing options without --hci-server are an error
    clock: Clock = VirtualClock() if options["clock"] == "virtual" else RealClock(options["speed"])
    flash = Flash(FLASH_SIZE, Path(options["flash"]) if options["flash"] else None)
    storage = Storage(flash)
    if options["load"]:
        load_table(storage, options["load"])
    band = Band(storage, clock, band_id=options["band_id"], battery_percent=options["battery"])
    handler = ProtocolHandler(band)
    trace_file = None
    if options["trace"]:
        trace_file = open(options["trace"], "w", encoding="utf-8")  # noqa: SIM115 (closed below)
        band.listeners.append(TraceWriter(trace_file))
    finished = asyncio.Event()
    band.listeners.append(lambda e: finished.set() if e["event"] == "state" and e["state"] == RunState.FINISHED.value else None)

    tasks: list[asyncio.Task[Any]] = [asyncio.create_task(band.run())]
    port = None
    if options["serial"] == "pty":
        from .serial_port import PtySerialPort

        port = PtySerialPort(handler, options["baud"])
        tasks.append(asyncio.create_task(port.serve()))
        print(f"serial: {port.path}", flush=True)
    ble = None
    if options["hci_server"] or options["hci"]:
        from .ble import BlePeripheral
        from .pairing import BandSecurity, bonds_path_for

        security = BandSecurity(bonds_path_for(Path(options["flash"])) if options["flash"] else None)
        ble = BlePeripheral(handler, band, hci_server=options["hci_server"], hci=options["hci"], security=security, **paced)
        await ble.start()
        print(f"ble: {ble.name} {ble.address}" + (f" via {options['hci_server']}" if options["hci_server"] else ""), flush=True)
    extra = None
    if options["bands"] > 1:
        if ble is None or ble.link is None:
            raise HandCueError("--bands needs --hci-server (the bands share its virtual link)")
        from .fleet import ExtraBands

        extra = ExtraBands(ble.link, options["bands"] - 1, first_id=options["band_id"] + 1, flash=Path(options["flash"]) if options["flash"] else None,
                           clock=lambda: VirtualClock() if options["clock"] == "virtual" else RealClock(options["speed"]), battery_percent=options["battery"])
        for peripheral in await extra.start():
            print(f"ble: {peripheral.name} {peripheral.address}", flush=True)
    button = BandButton(band, ble)
    button.install(loop)
    if options["pairing_window"] is not None:
        button.press(options["pairing_window"])
    if options["start"]:
        band.start()

    waiters: list[asyncio.Task[Any]] = [asyncio.create_task(stop.wait())]
    if options["exit_on_finish"]:
        async def wait_finished() -> None:
            await finished.wait()
            # let the done pattern play out
            while band.motor.busy:  # the main loop plays it; just look again shortly
                await asyncio.sleep(0.01)
        waiters.append(asyncio.create_task(wait_finished()))
    waiters += tasks
    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for task in waiters:
        task.cancel()
    for task in waiters:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if extra is not None:
        await extra.close()
    if ble is not None:
        await ble.close()
    if port is not None:
        port.close()
    if trace_file is not None:
        trace_file.close()
    flash.close()
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return 0


def _paced_link(options: dict[str, Any]) -> dict[str, Any]:
    """``link_factory=`` a paced virtual link when any --ble-interval/--ble-packets/--phy/--ble-loss is given."""
    chosen = {key: options[option] for key, option in (("interval_ms", "ble_interval"), ("packets_per_event", "ble_packets"),
                                                       ("phy", "phy"), ("loss", "ble_loss")) if options[option] is not None}
    if not chosen:
        return {}
    if not options["hci_server"]:
        raise HandCueError("--ble-interval, --ble-packets, --phy and --ble-loss pace the virtual link of --hci-server")
    from ble_stack.paced_link import LinkTiming, PacedLink

    timing = LinkTiming(**chosen)
    return {"link_factory": lambda: PacedLink(timing)}


def _interval(value: str | None) -> float | None:
    from ble_stack.paced_link import parse_interval_ms

    try:
        return None if value is None else parse_interval_ms(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _band_id(value: str) -> int:
    try:
        band_id = int(value, 16)
    except ValueError:
        band_id = -1
    if not 0 <= band_id <= 0xFFFF:
        raise click.BadParameter(f"{value!r} is not 1 to 4 hex digits")
    return band_id


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--flash", type=click.Path(dir_okay=False), help="Flash image file; the band keeps its routine across restarts.")
@click.option("--clock", type=click.Choice(["real", "virtual"]), default="real", show_default=True,
              help="virtual: time jumps from event to event (tests); real: wall clock (demos).")
@click.option("--speed", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True, help="Real clock only: run this many times faster.")
@click.option("--trace", type=click.Path(dir_okay=False), help="Write motor events and state changes as JSON lines.")
@click.option("--serial", type=click.Choice(["pty"]), help="Serve the protocol on a new pseudo-terminal (prints 'serial: PATH').")
@click.option("--baud", type=click.IntRange(min=300), help="Pace the pty to the wire time of this baud rate.")
@click.option("--hci-server", help="Expose a virtual BLE controller on this bumble transport (e.g. tcp-server:127.0.0.1:9901).")
@click.option("--hci", help="Run the band's BLE peripheral on this bumble HCI transport (e.g. usb:0).")
@click.option("--ble-interval", callback=lambda _ctx, _param, value: _interval(value),
              help="Pace the --hci-server link like a radio: connection interval (7.5ms, 15ms, 30ms, 50ms; default: unpaced).")
@click.option("--ble-packets", type=click.IntRange(min=1), help="Paced link: packets per connection event and direction [default: 6].")
@click.option("--phy", type=click.Choice(["1M", "2M"]), help="Paced link: PHY, for the air time of each packet [default: 2M].")
@click.option("--ble-loss", type=click.FloatRange(0, 0.9), help="Paced link: probability of losing a packet (retransmitted) [default: 0].")
@click.option("--band-id", callback=lambda _ctx, _param, value: _band_id(value), default="1A2B", show_default=True,
              help="Band id (4 hex digits); the BLE name is HandCue-<id>.")
@click.option("--battery", type=click.FloatRange(0, 100), default=87.0, show_default=True, help="Battery level in percent at boot.")
@click.option("--load", help="Store this table or routine before serving (as if uploaded).")
@click.option("--start", is_flag=True, help="Start the stored routine at boot.")
@click.option("--exit-on-finish", is_flag=True, help="Exit once the routine has finished and its done cue played.")
@click.option("--bands", type=click.IntRange(1, 64), default=1, show_default=True,
              help="With --hci-server: run this many bands (ids counting up from --band-id) on the served link.")
@click.option("--pairing-window", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Open the BLE pairing window at start (as a button press). SIGUSR1 presses the button, SIGUSR2 long-presses it (factory reset).")
def cli(**options: Any) -> None:
    """Simulated HandCue band: flash, interpreter, motor and protocol, on a pty and/or BLE."""
    try:
        sys.exit(asyncio.run(run_band(options)))
    except (HandCueError, SimulatorFault) as exc:  # a bad --load, a flash image of the wrong size
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:  # flash file, pty, TCP port for --hci-server
        click.echo(f"error: {exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


def main() -> None:
    cli(prog_name="handcue-sim")
