"""``handcue history``: the sessions a band recorded, as a table, JSON, CSV or a FIT activity file; ``--clear`` erases them.

Defined without importing :mod:`companion.cli`, which registers :data:`COMMANDS`.
Reading and clearing are two connections: the command reads (and writes its
outputs) first, asks, then clears only if no session was recorded in between,
so nothing is erased that was not shown (which is also why ``--since`` and
``--clear`` do not go together).  A FIT file is written before anything is
printed, so when it cannot be, the error is all the command prints.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .cli_band import with_band
from .cli_common import address_option, ble_options, emit_json, fail, json_option, run, say, timeout_option

if TYPE_CHECKING:
    from protocol.history import Session

    from .client import BandClient


def stdin_is_terminal() -> bool:
    """Whether a person can be asked on this terminal (``--clear`` without ``--yes``)."""
    return sys.stdin.isatty()


@click.command()
@address_option
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="One CSV line per session under a header line.")
@click.option("--since", metavar="DATE", help="Only sessions that started at or after this ISO date or time (2025-12-02, 2025-12-02T07:30; "
                                              "local time unless it has an offset). Sessions without a date are left out.")
@click.option("--fit", "fit_path", type=click.Path(dir_okay=False, writable=True, path_type=Path), metavar="FILE",
              help="Also write the sessions with a date as a FIT activity file (one FIT session each; needs the fit extra).")
@click.option("--clear", is_flag=True, help="Then erase the band's history (asks first; not with --since; needs a paired link on a paired band).")
@click.option("--yes", is_flag=True, help="With --clear: do not ask.")
@timeout_option()
@ble_options
def history(address: str, as_json: bool, as_csv: bool, since: str | None, fit_path: Path | None, clear: bool, yes: bool,
            timeout: float | None, hci: str | None, ble_backend: str | None) -> None:
    """Show the sessions the band recorded: when, which routine, how it ended, time played, progress, pauses, skips, acknowledgements."""
    from .history_export import fit_activity, history_csv, history_json, history_table, parse_since, since_filter

    if as_json and as_csv:
        raise click.UsageError("give --json or --csv, not both")
    if yes and not clear:
        raise click.UsageError("--yes only confirms --clear")
    if since is not None and clear:
        raise click.UsageError("--since shows only some sessions but --clear erases them all: clear without --since")
    if fit_path is not None and not fit_path.absolute().parent.is_dir():
        raise click.BadParameter(f"the folder {fit_path.absolute().parent} does not exist", param_hint="--fit")
    since_at = None
    if since is not None:
        try:
            since_at = parse_since(since)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from None
    if clear and not yes and not stdin_is_terminal():
        fail("--clear erases the band's session history: confirm with --yes when there is no terminal to ask on")

    async def read(client: BandClient) -> tuple[list[Session], int | None]:
        return await client.history(), client.band_info.band_id if client.band_info else None

    held, band_id = run(with_band(address, timeout, read, hci, ble_backend))
    sessions, undated = (held, 0) if since_at is None else since_filter(held, since_at)
    if fit_path is not None:  # first: an error must not follow a printed table, JSON or CSV
        if since is not None and held and not sessions:
            fail(f"no session matches --since {since} ({len(held)} recorded), so there is nothing to write to FIT")
        fit_path.write_bytes(fit_activity(sessions, band_id or 0))
    if as_json:
        emit_json(history_json(sessions, band_id))
    elif as_csv:
        click.echo(history_csv(sessions, band_id), nl=False)
    elif sessions:
        click.echo(history_table(sessions))
    else:
        say("no sessions recorded" + (" since then" if since_at is not None and held else ""))
    if undated:
        say(f"{undated} session(s) without a date left out by --since (the band's clock was not set when they were recorded)", err=True)
    if fit_path is not None:
        say(f"wrote {fit_path}", err=as_json or as_csv)
    if not clear:
        return
    if not yes and not click.confirm(f"Erase all {len(held)} session(s) from the band?", default=False, err=True):
        say("history kept", err=True)
        return
    seen = held[-1].seq + 1 if held else 0

    async def erase(client: BandClient) -> int:
        newer = await client.history(since=seen)
        if newer:
            return len(newer)
        await client.clear_history()
        return 0

    newer = run(with_band(address, timeout, erase, hci, ble_backend))
    if newer:
        fail(f"the band recorded {newer} more session(s) since they were read; nothing erased (run the command again)")
    say("history cleared", err=True)


COMMANDS = (history,)
