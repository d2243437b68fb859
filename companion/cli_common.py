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
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import click

EXIT_INVALID = 1

JSON_MODE = "handcue.json"
"""Key in the click context's ``meta`` (shared by every nested context): the command was given ``--json``."""
QUIET_MODE = "handcue.quiet"
"""Key in ``meta``: ``-q/--quiet`` was given."""

T = TypeVar("T")


def _meta(key: str) -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(key))


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
    from .config import default_address

    if not value:
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


address_option = click.option(
    "--to", "address", cls=AddressOption, callback=resolve_address, metavar="ADDR", shell_complete=complete_band,
    help="Band address: serial:/dev/ttyUSB0[?baud=N] (or just /dev/ttyUSB0, COM3) or ble:HandCue-1A2B. "
         "Default: HANDCUE_ADDRESS, else `handcue config set address ADDR`.")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """The one place the CLI enters asyncio."""
    import asyncio

    return asyncio.run(coroutine)
