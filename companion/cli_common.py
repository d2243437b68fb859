"""What every ``handcue`` command module shares: one-line failures, JSON output, common options, the asyncio edge.

The command modules (:mod:`companion.cli`, :mod:`companion.cli_band`,
:mod:`companion.cli_visual`) import this module and never each other, except
that :mod:`companion.cli` adds their commands to the group.  Keep it light:
``handcue --help`` imports it.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from .phases import Phases

EXIT_INVALID = 1

JSON_MODE = "handcue.json"
"""Key in the click context's ``meta`` (shared by every nested context): the command was given ``--json``."""
QUIET_MODE = "handcue.quiet"
"""Key in ``meta``: ``-q/--quiet`` was given."""
PHASES = "handcue.phases"
"""Key in ``meta``: the command's :class:`~companion.phases.Phases` (``-v`` prints them at the end)."""
RAN_UNTIL = "handcue.ran_until"
"""Key in ``meta``: when the command's band work (:func:`run`) ended, on its recorder's clock; what follows is printing the result."""

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _meta(key: str) -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(key))


def command_phases() -> Phases:
    """Where the running command records its phases (a fresh recorder outside a command)."""
    from .phases import Phases

    ctx = click.get_current_context(silent=True)
    phases = ctx.meta.get(PHASES) if ctx is not None else None
    return phases if isinstance(phases, Phases) else Phases()


def json_mode() -> bool:
    return _meta(JSON_MODE)


def quiet() -> bool:
    return _meta(QUIET_MODE)


def fail(message: str, *, as_json: bool | None = None) -> NoReturn:
    """Report ``message`` (one ``error:`` line per line on stderr, or a JSON object on stdout under ``--json``) and exit 1."""
    if json_mode() if as_json is None else as_json:
        click.echo(json.dumps({"error": message}, ensure_ascii=False))
    else:
        for line in message.splitlines() or [message]:
            click.echo(f"error: {line}", err=True)
    sys.exit(EXIT_INVALID)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def say(message: str, *, err: bool = False) -> None:
    """An informational line, left out under ``-q``."""
    if not quiet():
        click.echo(message, err=err)


def _mark_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta[JSON_MODE] = True
    return value


json_option = click.option("--json", "as_json", is_flag=True, is_eager=True, callback=_mark_json,
                           help="Machine-readable output (errors too, as {\"error\": ...}).")


# --------------------------------------------------------------------------
# Completion (click's shell completion: see README, "Everyday use")


def complete_routine(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
    """Shipped routine ids, then the shell's own file completion."""
    from click.shell_completion import CompletionItem

    from .routine import shipped_routines

    items = [CompletionItem(routine_id) for routine_id in sorted(shipped_routines()) if routine_id.startswith(incomplete)]
    return [*items, CompletionItem(incomplete, type="file")]


def complete_band(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
    """Bands seen recently (``scan`` and every command that reached one), from the cache."""
    from click.shell_completion import CompletionItem

    from .config import recent_bands

    return [CompletionItem(address) for address in recent_bands() if address.startswith(incomplete)]


# --------------------------------------------------------------------------
# The band address


BARE_SERIAL = re.compile(r"^(/dev/\S+|COM\d+|\\\\\.\\COM\d+)(\?.*)?$", re.IGNORECASE)


def normalize_address(value: str) -> str:
    """``/dev/ttyUSB0`` and ``COM3`` as ``serial:`` addresses; anything else unchanged."""
    return f"serial:{value}" if BARE_SERIAL.match(value) else value


def missing_address_message() -> str:
    return ("missing --to ADDR: name the band (serial:/dev/ttyUSB0, /dev/ttyUSB0, COM3, ble:HandCue-1A2B), "
            "or set a default with HANDCUE_ADDRESS=ADDR or `handcue config set address ADDR`")


def resolve_address(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    """The band address from ``--to``, ``HANDCUE_ADDRESS`` or the config file; a malformed one is a usage error (exit 2)."""
    # A phase of the command: the first address check imports asyncio and the transports (25-30 ms).
    from .phases import loading

    with loading(command_phases(), "check the address (imports asyncio, the transports)"):
        if not value:
            from .config import default_address

            default = default_address()
            if default is None:
                raise click.UsageError(missing_address_message(), ctx)
            value = default[0]
        return checked_address(value, ctx, param)


def checked_address(value: str, ctx: click.Context | None = None, param: click.Parameter | None = None) -> str:
    """``value`` normalised (:func:`normalize_address`) and parsed; :class:`click.BadParameter` (exit 2) if it is no band address."""
    from .errors import AddressError
    from .transport import open_transport

    address = normalize_address(value.strip())
    try:
        open_transport(address)  # parses the address; nothing is opened
    except AddressError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc
    return address


class AddressOption(click.Option):
    """``--to``: shown as required only when no default band is set; the help names the default and where it is set."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        record = super().get_help_record(ctx)
        if record is None:
            return None
        from .config import default_address

        default = default_address()
        extra = "[required: no default band is set]" if default is None else f"[default: {default[0]}, from {default[1]}]"
        return record[0], f"{record[1]}  {extra}"


def resolve_addresses(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """Several ``--to``: each checked as :func:`resolve_address` does; none given means the default band."""
    if not values:
        return (resolve_address(ctx, param, None),)
    return tuple(dict.fromkeys(resolve_address(ctx, param, value) for value in values))


ADDRESS_HELP = ("Band address: serial:/dev/ttyUSB0[?baud=N] (or just /dev/ttyUSB0, COM3) or ble:HandCue-1A2B. "
                "Default: HANDCUE_ADDRESS, else `handcue config set address ADDR`.")
SEVERAL_HELP = " Repeat it, or give a pattern over a scan such as 'ble:HandCue-*', for several bands at once."


def to_option(*, several: bool = False, help: str = ADDRESS_HELP) -> Callable[[F], F]:
    """``--to``, the one definition: a band address (or with ``several``, a tuple of them or of patterns),
    defaulting to HANDCUE_ADDRESS or the config file."""
    if several:
        return click.option("--to", "targets", cls=AddressOption, multiple=True, callback=resolve_addresses, metavar="ADDR",
                            shell_complete=complete_band, help=help + SEVERAL_HELP)
    return click.option("--to", "address", cls=AddressOption, callback=resolve_address, metavar="ADDR", shell_complete=complete_band, help=help)


address_option = to_option()
"""``--to ADDR``: one band."""
targets_option = to_option(several=True)
"""``--to ADDR`` repeated, or a pattern: several bands (``targets``, a tuple)."""

TIMEOUT_HELP = "Upper bound in seconds on every wait for the band [default: 3; 15 for the flash work of upload begin/commit and erase]."


def timeout_option(default: float | None = None, help: str = TIMEOUT_HELP) -> Callable[[F], F]:
    """``--timeout SECONDS``, the one definition (a command may give its own default and meaning)."""
    return click.option("--timeout", type=click.FloatRange(min=0.1), default=default, show_default=default is not None, help=help)


hci_option = click.option("--hci", envvar="HANDCUE_HCI", metavar="TRANSPORT",
                          help="Route BLE through bumble on this HCI transport instead of the OS stack (env HANDCUE_HCI).")
ble_backend_option = click.option(
    "--ble-backend", envvar="HANDCUE_BLE_BACKEND", metavar="MODULE:ATTR",
    help="Any bleak backend, named as module:attribute (a bleak client class, a BleBackend or a factory of one), "
         "e.g. for ESPHome Bluetooth proxies; wins over --hci (env HANDCUE_BLE_BACKEND).")


def ble_options(command: F) -> F:
    """``--hci`` and ``--ble-backend``: how a BLE-capable command reaches the air."""
    return hci_option(ble_backend_option(command))


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """The one place the CLI enters asyncio (the loop's shutdown after ``coroutine`` is a phase of the command)."""
    import asyncio

    phases = command_phases()
    ended: list[float] = []

    async def timed() -> T:
        try:
            return await coroutine
        finally:
            ended.append(phases.now())

    try:
        return asyncio.run(timed())
    finally:
        if ended:
            phases.add("close the event loop", ended[0])
        ctx = click.get_current_context(silent=True)
        if ctx is not None:
            ctx.meta[RAN_UNTIL] = phases.now()
