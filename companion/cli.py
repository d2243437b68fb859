"""The ``handcue`` command line.

Every command goes through :class:`HandCueGroup`, which turns any
:class:`~protocol.errors.HandCueError` into one line on stderr and exit code 1
(usage errors exit 2, click's convention).  Heavy libraries (bleak, bumble,
matplotlib) are imported inside the commands that need them.

This module defines the group and the routine and table commands; the band
commands (:mod:`companion.cli_band`) and the visual ones
(:mod:`companion.cli_visual`) are defined there, without importing this
module, and added to the group here.
"""

from __future__ import annotations

import os
import sys
import zlib
from pathlib import Path
from typing import Any

import click

from protocol.errors import HandCueError

from . import cli_band, cli_visual
from .cli_common import EXIT_INVALID, emit_json, fail


class HandCueGroup(click.Group):
    """A click group that reports HandCue errors as one clear line each."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HandCueError as exc:
            fail(str(exc))
        except BrokenPipeError:  # `handcue techniques | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except OSError as exc:
            fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug: still one line, with a way to see more
            if os.environ.get("HANDCUE_DEBUG"):
                raise
            fail(f"internal error: {type(exc).__name__}: {exc} (set HANDCUE_DEBUG=1 to see the traceback)")


@click.group(cls=HandCueGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="handcue")
def cli() -> None:
    """HandCue: vibration cues on the wrist that guide hand massage and acupressure.

    Write or pick a routine, check it, compile it to a step table, upload it to
    a band and follow the session.  ROUTINE is a TOML file or the id of a
    shipped routine (see `handcue routines`).

    Not medical advice: anyone with a condition should ask a clinician.
    """


# --------------------------------------------------------------------------
# Library


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def techniques(as_json: bool) -> None:
    """List the built-in technique library."""
    from .techniques import TECHNIQUES

    if as_json:
        emit_json([
            {
                "id": t.id, "code": int(t.code), "name": t.name, "how": t.how, "default_time": t.default_time,
                "cue_notes": t.cue_notes, "default_duration_s": t.defaults.duration_s, "for_each": t.defaults.for_each,
                "acupressure": t.acupressure,
            }
            for t in TECHNIQUES.values()
        ])
        return
    width = max(len(t.id) for t in TECHNIQUES.values())
    for t in TECHNIQUES.values():
        each = f" per {t.defaults.for_each}" if t.defaults.for_each else ""
        click.echo(f"{t.id:<{width}}  {t.name} ({t.defaults.duration_s:g} s{each}; article: {t.default_time})")
        click.echo(f"{'':<{width}}  {t.how}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def routines(as_json: bool) -> None:
    """List the shipped routines (usable by id wherever a file is accepted)."""
    from .routine import format_ms, load_routine, shipped_routines

    rows: list[dict[str, Any]] = []
    for routine_id, path in sorted(shipped_routines().items()):
        routine = load_routine(path)
        rows.append({"id": routine_id, "name": routine.name, "description": routine.description,
                     "duration_ms": routine.total_ms, "hands": routine.hands.order, "file": str(path)})
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        click.echo(f"{row['id']:<18} {format_ms(row['duration_ms']):>12}  {row['name']}: {row['description']}")
    click.echo("\nCopy one to start your own: handcue routines --json shows each file's path.")


# --------------------------------------------------------------------------
# Routines and tables


@cli.command()
@click.argument("routine")
def check(routine: str) -> None:
    """Check a routine: format, technique library and safety rules."""
    from .compiler import compile_routine
    from .routine import check_routine, format_ms

    parsed, diagnostics = check_routine(routine)
    for diagnostic in diagnostics:
        click.echo(f"{'error: ' if diagnostic.severity == 'error' else ''}{diagnostic}", err=True)
    if parsed is None:
        sys.exit(EXIT_INVALID)
    size = len(compile_routine(parsed, names=False))
    click.echo(f"{parsed.source}: ok: {parsed.name}, {format_ms(parsed.total_ms)}, {size} bytes compiled (--no-names)")


@cli.command("compile")
@click.argument("routine")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Table file to write (.hcue).")
@click.option("--no-names", is_flag=True, help="Leave out the name section to save bytes.")
def compile_command(routine: str, output: Path, no_names: bool) -> None:
    """Compile a routine into a binary step table (same input, same bytes)."""
    from .compiler import compile_routine
    from .routine import load_routine

    parsed = load_routine(routine)
    for warning in parsed.warnings:
        click.echo(str(warning), err=True)
    data = compile_routine(parsed, names=not no_names)
    output.write_bytes(data)
    # The same CRC-32 (of the whole file) that `upload` and `info` show.
    click.echo(f"wrote {output}: {len(data)} bytes, CRC-32 0x{zlib.crc32(data):08X}")


@cli.command()
@click.argument("table")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--timeline", is_flag=True, help="List every motor event the band will produce.")
def inspect(table: str, as_json: bool, timeline: bool) -> None:
    """Decode a step table (.hcue; a routine is compiled first) and show it."""
    from . import render
    from .tables import load_table_or_routine

    data = load_table_or_routine(table)
    if timeline:
        events = render.timeline(data)
        if as_json:
            emit_json([event.to_json() for event in events])
        else:
            click.echo(render.timeline_text(data, events))
        return
    if as_json:
        emit_json(render.table_json(data))
    else:
        click.echo(render.table_text(data))


for _command in (*cli_band.COMMANDS, *cli_visual.COMMANDS):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="handcue")
