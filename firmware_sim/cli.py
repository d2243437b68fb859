"""``handcue-sim``: run a simulated band as a process.

Examples::

    handcue-sim --serial pty                       # prints "serial: /dev/pts/N"
    handcue-sim --serial pty --flash band.bin --baud 115200
    handcue-sim --load nausea-pc6 --start --clock virtual --trace out.jsonl --exit-on-finish
    handcue-sim --serial pty --faults "corrupt=0.01,drop=0.005,stall=200ms@0.001" --fault-seed 7
    handcue-sim --serial pty --flash band.bin --power-cut-after 5000
    handcue-sim --hci-server tcp-server:127.0.0.1:9901 --ble-interval 15ms --ble-packets 6 --phy 2M --ble-data-length 27
    handcue-sim --hci-server tcp-server:127.0.0.1:9901 --ble-interval 30ms --ble-loss 0.05 --ble-loss-seed 7

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
from .link_faults import FaultSpec, FaultSpecError, LinkFaults
from .storage import FLASH_SIZE, BootOutcome, Storage


def load_table(storage: Storage, reference: str) -> None:
    """Store a table (or a routine, compiled) through the normal upload path."""
    from companion.tables import load_table_or_routine

    data = load_table_or_routine(reference)
    offset = storage.begin_upload(len(data), zlib.crc32(data))
    if offset < len(data):
        storage.write_chunk(offset, data[offset:])
    storage.commit()


class TraceWriter:
    """JSON lines of motor events, state changes and acknowledgement points (SPEC §12.8, §12.10)."""

    def __init__(self, handle: IO[str]) -> None:
        self.handle = handle

    def __call__(self, event: dict[str, Any]) -> None:
        if event["event"] in ("motor", "state", "ack"):
            self.handle.write(json.dumps(event) + "\n")
            self.handle.flush()


class Board:
    """The simulated hardware: flash (and its file), clock and transports, and the firmware booted on them.

    A power cut armed by ``--power-cut-after`` stops the firmware in the middle
    of a flash operation (the request being served is never answered); the
    board then reboots it in-process, from the flash file (or, without
    ``--flash``, from the flash contents the cut left): a new storage mount,
    band and protocol handler, the same pty path (its queued output lost), BLE
    connections dropped and advertising again.  Each ``--power-cut-after``
    value arms the next boot; the last boot runs without a cut.
    """

    def __init__(self, options: dict[str, Any], clock: Clock) -> None:
        self.options = options
        self.clock = clock
        self.power_cuts: list[int] = list(options["power_cut_after"] or ())
        self.reboots = 0
        self.power_lost = asyncio.Event()
        self.finished = asyncio.Event()
        self.trace_file: IO[str] | None = None
        if options["trace"]:
            self.trace_file = open(options["trace"], "w", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.flash = Flash(FLASH_SIZE, self._flash_path())
        self.band, self.handler = self._boot(first=True)

    def _flash_path(self) -> Path | None:
        return Path(self.options["flash"]) if self.options["flash"] else None

    def _boot(self, *, first: bool, battery: float | None = None) -> tuple[Band, ProtocolHandler]:
        storage = Storage(self.flash)
        report = storage.boot_report
        if report.outcome is not BootOutcome.BLANK or report.file_size is not None:
            click.echo(str(report), err=True)
        if first and self.options["load"]:
            load_table(storage, self.options["load"])
        if self.power_cuts:
            self.flash.cut_power_after(self.power_cuts.pop(0))
            self.flash.on_power_loss = self._on_power_loss
        band = Band(storage, self.clock, band_id=self.options["band_id"],
                    battery_percent=self.options["battery"] if battery is None else battery)
        if self.trace_file is not None:
            band.listeners.append(TraceWriter(self.trace_file))
        band.listeners.append(lambda e: self.finished.set() if e["event"] == "state" and e["state"] == RunState.FINISHED.value else None)
        return band, ProtocolHandler(band)

    def _on_power_loss(self) -> None:
        # Called inside the flash operation being cut: reboot once the stack has unwound.
        asyncio.get_running_loop().call_soon(self.power_lost.set)

    def reboot(self) -> None:
        """Boot again from the flash file, as after the supply came back."""
        self.reboots += 1
        click.echo(f"power cut (#{self.reboots}): rebooting from {self.options['flash'] or 'the flash left in RAM'}", err=True)
        image = self.flash.snapshot()
        self.flash.close()
        path = self._flash_path()
        self.flash = Flash(FLASH_SIZE, path) if path is not None else Flash.from_image(image)
        self.power_lost.clear()
        self.band, self.handler = self._boot(first=False, battery=self.band.battery_percent)

    def close(self) -> None:
        self.flash.close()
        if self.trace_file is not None:
            self.trace_file.close()


async def _stop_tasks(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run_band(options: dict[str, Any]) -> int:
    # Signals first: a supervisor may stop us as soon as we print our ports.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    paced = _paced_link(options)  # checked first: pacing options without --hci-server are an error
    clock: Clock = VirtualClock() if options["clock"] == "virtual" else RealClock(options["speed"])
    faults = None
    if options["faults"]:
        faults = LinkFaults(options["faults"], options["fault_seed"])
        click.echo(faults.describe(), err=True)
    board = Board(options, clock)
    band_task = asyncio.create_task(board.band.run())
    transports: list[asyncio.Task[Any]] = []
    port = None
    if options["serial"] == "pty":
        from .serial_port import PtySerialPort

        port = PtySerialPort(board.handler, options["baud"], faults=faults)
        transports.append(asyncio.create_task(port.serve()))
        print(f"serial: {port.path}", flush=True)
    ble = None
    if options["hci_server"] or options["hci"]:
        from .ble import BlePeripheral
        from .pairing import BandSecurity, bonds_path_for

        security = BandSecurity(bonds_path_for(Path(options["flash"])) if options["flash"] else None)
        ble = BlePeripheral(board.handler, board.band, hci_server=options["hci_server"], hci=options["hci"], security=security, faults=faults, **paced)
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
    button = BandButton(board.band, ble)
    button.install(loop)
    if options["pairing_window"] is not None:
        button.press(options["pairing_window"])
    if port is None and ble is None:  # say why nothing else will be printed
        print("no transport given (--serial pty, --hci-server or --hci): the band runs on its own, reachable by nothing; "
              + ("it plays its routine; " if options["start"] else "")
              + ("it exits when the routine ends" if options["exit_on_finish"] else "Ctrl-C stops it"), file=sys.stderr, flush=True)
    if options["start"]:
        board.band.start()

    async def wait_finished() -> None:
        await board.finished.wait()
        # let the done pattern play out
        while board.band.motor.busy:  # the main loop plays it; just look again shortly
            await asyncio.sleep(0.01)

    waiters: list[asyncio.Task[Any]] = [asyncio.create_task(stop.wait()), asyncio.create_task(board.power_lost.wait())]
    if options["exit_on_finish"]:
        waiters.append(asyncio.create_task(wait_finished()))
    failure: BaseException | None = None
    try:
        while True:
            done, _ = await asyncio.wait([*waiters, band_task, *transports], return_when=asyncio.FIRST_COMPLETED)
            failed = [task for task in done if task in (band_task, *transports) and not task.cancelled()]
            if failed:
                failure = failed[0].exception()
                break
            if not board.power_lost.is_set():
                break  # stopped, or finished
            await _stop_tasks([band_task, waiters[1]])
            board.reboot()
            band_task = asyncio.create_task(board.band.run())
            waiters[1] = asyncio.create_task(board.power_lost.wait())
            if port is not None:
                port.rebind(board.handler)
            if ble is not None:
                await ble.rebind(board.handler, board.band)
    finally:
        await _stop_tasks([*waiters, band_task, *transports])
        if extra is not None:
            await extra.close()
        if ble is not None:
            await ble.close()
        if port is not None:
            port.close()
        board.close()
    if failure is not None:
        raise failure
    return 0


def _fault_spec(value: str | None) -> FaultSpec | None:
    if value is None:
        return None
    try:
        return FaultSpec.parse(value)
    except FaultSpecError as exc:
        raise click.BadParameter(str(exc)) from None


PACING_OPTIONS = (("interval_ms", "ble_interval"), ("packets_per_event", "ble_packets"), ("phy", "phy"),
                  ("data_length", "ble_data_length"), ("loss", "ble_loss"), ("seed", "ble_loss_seed"))
"""``LinkTiming`` field and the handcue-sim option that sets it."""


def _paced_link(options: dict[str, Any]) -> dict[str, Any]:
    """``link_factory=`` a paced virtual link when any of the pacing options (--ble-interval, --ble-packets, ...) is given."""
    chosen = {key: options[option] for key, option in PACING_OPTIONS if options.get(option) is not None}
    if not chosen:
        return {}
    if not options["hci_server"]:
        raise HandCueError("--ble-interval, --ble-packets, --phy, --ble-data-length, --ble-loss and --ble-loss-seed "
                           "pace the virtual link of --hci-server")
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
@click.version_option(package_name="handcue", prog_name="handcue-sim")
@click.option("--flash", type=click.Path(dir_okay=False), help="Flash image file; the band keeps its routine across restarts.")
@click.option("--clock", type=click.Choice(["real", "virtual"]), default="real", show_default=True,
              help="virtual: time jumps from event to event (tests); real: wall clock (demos).")
@click.option("--speed", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True, help="Real clock only: run this many times faster.")
@click.option("--trace", type=click.Path(dir_okay=False), help="Write motor events, state changes and acknowledgement points as JSON lines.")
@click.option("--serial", type=click.Choice(["pty"]), help="Serve the protocol on a new pseudo-terminal (prints 'serial: PATH').")
@click.option("--baud", type=click.IntRange(min=300), help="Pace the pty to the wire time of this baud rate.")
@click.option("--hci-server", help="Expose a virtual BLE controller on this bumble transport (e.g. tcp-server:127.0.0.1:9901).")
@click.option("--hci", help="Run the band's BLE peripheral on this bumble HCI transport (e.g. usb:0).")
@click.option("--ble-interval", callback=lambda _ctx, _param, value: _interval(value),
              help="Pace the --hci-server link like a radio: connection interval (7.5ms, 15ms, 30ms, 50ms). Default: unpaced, "
                   "unless another paced-link option is given, which paces it at 15ms.")
@click.option("--ble-packets", type=click.IntRange(min=1), help="Paced link: packets per connection event and direction [default: 6].")
@click.option("--phy", type=click.Choice(["1M", "2M"]), help="Paced link: PHY, for the air time of each packet [default: 2M].")
@click.option("--ble-data-length", type=click.Choice(["27", "251"]), callback=lambda _ctx, _param, value: None if value is None else int(value),
              help="Paced link: link-layer payload bytes per packet (27: no data length extension) [default: 251].")
@click.option("--ble-loss", type=click.FloatRange(0, 0.9), help="Paced link: probability of losing a packet (retransmitted) [default: 0].")
@click.option("--ble-loss-seed", type=click.IntRange(min=0), metavar="N",
              help="Paced link: seed of the loss and advertising-delay draws, to replay a run [default: 0].")
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
@click.option("--faults", callback=lambda _ctx, _param, value: _fault_spec(value), metavar="SPEC",
              help="Inject link faults, per byte on serial and per write/notification on BLE, e.g. "
                   "'corrupt=0.01,drop=0.005,dup=0.005,disconnect=0.0005,stall=200ms@0.001'.")
@click.option("--fault-seed", type=click.IntRange(min=0), help="Seed of the fault generator (printed when drawn at random), to replay a run.")
@click.option("--power-cut-after", type=click.IntRange(min=0), multiple=True, metavar="UNITS",
              help="Cut power after UNITS flash work units (a programmed byte, an erased page), then reboot from the flash; "
                   "repeat to cut again after each reboot.")
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
