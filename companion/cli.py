"""The ``handcue`` command line.

Every command goes through :class:`HandCueGroup`, which turns any
:class:`~protocol.errors.HandCueError` into one line on stderr and exit code 1
(usage errors exit 2, click's convention).  Heavy libraries (bleak, bumble,
matplotlib) are imported inside the commands that need them.

This module defines the group and the routine and table commands; the band
commands (:mod:`companion.cli_band`, several bands through :mod:`companion.cli_fleet`),
pairing (:mod:`companion.cli_pairing`) and the visual ones
(:mod:`companion.cli_visual`) are defined there, without importing this
module, and added to the group here.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()
"""The CLI's first line: ``-v`` counts the command's phases from here (the interpreter's start comes before)."""
CPU_BEFORE = time.process_time()
"""CPU seconds the process had used by then: about the interpreter's start, which no clock of the process sees begin."""

import json  # noqa: E402  (the first timestamp comes first)
import os  # noqa: E402
import sys  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402

from protocol.errors import HandCueError  # noqa: E402

from . import cli_band, cli_calibrate, cli_history, cli_pairing, cli_settings, cli_visual  # noqa: E402
from .cli_common import EXIT_INVALID, JSON_MODE, PHASES, QUIET_MODE, RAN_UNTIL, complete_routine, emit_json, fail, json_option, say  # noqa: E402
from .phases import Phases, freeze_what_is_loaded  # noqa: E402

IMPORTED = time.perf_counter()
"""When this module (and the command modules it adds to the group) had been imported."""
_from_main: Phases | None = None
"""The recorder :func:`main` made for the one command of this process, timed from :data:`STARTED`."""


class HandCueGroup(click.Group):
    """A click group that reports HandCue errors as one clear line each."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HandCueError as exc:
            fail(str(exc), as_json=bool(ctx.meta.get(JSON_MODE)))
        except BrokenPipeError:  # `handcue techniques | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except OSError as exc:
            fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), as_json=bool(ctx.meta.get(JSON_MODE)))
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except click.ClickException as exc:
            if not ctx.meta.get(JSON_MODE):
                raise
            click.echo(json.dumps({"error": exc.format_message(), "usage": isinstance(exc, click.UsageError)}, ensure_ascii=False))
            sys.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug: still one line, with a way to see more
            if os.environ.get("HANDCUE_DEBUG"):
                raise
            fail(f"internal error: {type(exc).__name__}: {exc} (set HANDCUE_DEBUG=1 to see the traceback)", as_json=bool(ctx.meta.get(JSON_MODE)))


@click.group(cls=HandCueGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="handcue")
@click.option("-v", "--verbose", count=True, help="Log protocol traffic to stderr: requests and answers with their frames in hex (-vv: every library's debug log too).")
@click.option("-q", "--quiet", is_flag=True, help="Print only results, warnings and errors (no progress, no 'wrote ...').")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """HandCue: vibration cues on the wrist that guide hand massage and acupressure.

    Write or pick a routine, check it, compile it to a step table, upload it to
    a band and follow the session.  ROUTINE is a TOML file or the id of a
    shipped routine (see `handcue routines`).

    Not medical advice: anyone with a condition should ask a clinician.
    """
    global _from_main
    ctx.meta[QUIET_MODE] = quiet
    # One recorder per command: main's (timed from the CLI's first line) for the process's command, else
    # (several commands in one process, as in tests) a fresh one.
    phases = _from_main if _from_main is not None else Phases()
    _from_main = None
    ctx.meta[PHASES] = phases
    if verbose:
        import logging

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logger = logging.getLogger() if verbose > 1 else logging.getLogger("companion")
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        ctx.call_on_close(lambda: print_phases(phases))
    ctx.call_on_close(lambda: _after_band_work(ctx, phases))  # runs before print_phases (last registered, first run)


def _after_band_work(ctx: click.Context, phases: Phases) -> None:
    """Record what the command did after its band work ended (rendering the answer, with what it imports)."""
    ran_until = ctx.meta.get(RAN_UNTIL)
    if isinstance(ran_until, float):
        phases.add("print the result", ran_until)


def print_phases(phases: Phases) -> None:
    """``-v``: where the command's time went, once it is done (nothing if it recorded no phase)."""
    if not [phase for phase in phases.recorded if phase.name != "imports (companion CLI)"]:
        return
    import logging

    until = phases.now()
    before = f"before 0.0 ms: the interpreter's start, {CPU_BEFORE * 1000:.0f} ms of CPU time" if phases.origin == STARTED else ""
    lines = [*([before] if before else []), *phases.lines(until=until), "after that: the interpreter's exit"]
    logging.getLogger("companion.phases").debug("where the time went:\n%s", "\n".join(lines))


# --------------------------------------------------------------------------
# Library


@cli.command()
@json_option
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
@json_option
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
@click.argument("routine", shell_complete=complete_routine)
@json_option
def check(routine: str, as_json: bool) -> None:
    """Check a routine: format, technique library and safety rules.

    ROUTINE is a file, a shipped id or - (standard input).
    """
    from .compiler import compile_routine
    from .routine import check_routine, format_ms

    parsed, diagnostics = check_routine(routine)
    size = len(compile_routine(parsed, names=False)) if parsed is not None else None
    if as_json:
        emit_json({
            "source": parsed.source if parsed else (diagnostics[0].source if diagnostics else routine),
            "ok": parsed is not None,
            "name": parsed.name if parsed else None,
            "duration_ms": parsed.total_ms if parsed else None,
            "size_no_names": size,
            "diagnostics": [{"severity": d.severity, "where": d.where, "message": d.message} for d in diagnostics],
        })
        if parsed is None:
            sys.exit(EXIT_INVALID)
        return
    for diagnostic in diagnostics:
        click.echo(f"{'error: ' if diagnostic.severity == 'error' else ''}{diagnostic}", err=True)
    if parsed is None:
        sys.exit(EXIT_INVALID)
    say(f"{parsed.source}: ok: {parsed.name}, {format_ms(parsed.total_ms)}, {size} bytes compiled (--no-names)")


@cli.command("compile")
@click.argument("routine", shell_complete=complete_routine)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Table file to write (.hcue); - for standard output.")
@click.option("--no-names", is_flag=True, help="Leave out the name section to save bytes.")
@json_option
def compile_command(routine: str, output: Path, no_names: bool, as_json: bool) -> None:
    """Compile a routine into a binary step table (same input, same bytes)."""
    from .compiler import compile_routine
    from .routine import load_routine

    to_stdout = str(output) == "-"
    if to_stdout and as_json:
        raise click.UsageError("-o - writes the table to standard output; --json needs a file to write")
    parsed = load_routine(routine)
    if not as_json:
        for warning in parsed.warnings:
            click.echo(str(warning), err=True)
    data = compile_routine(parsed, names=not no_names)
    if as_json:
        output.write_bytes(data)
        emit_json({"output": str(output), "size": len(data), "crc32": f"0x{zlib.crc32(data):08X}", "names": not no_names,
                   "warnings": [{"where": w.where, "message": w.message} for w in parsed.warnings]})
        return
    if to_stdout:
        click.get_binary_stream("stdout").write(data)
    else:
        output.write_bytes(data)
    # The same CRC-32 (of the whole file) that `upload` and `info` show.
    say(f"wrote {'standard output' if to_stdout else output}: {len(data)} bytes, CRC-32 0x{zlib.crc32(data):08X}", err=to_stdout)


@cli.command()
@click.argument("table", metavar="TABLE|ROUTINE", shell_complete=complete_routine)
@json_option
@click.option("--timeline", is_flag=True, help="List every motor event the band will produce.")
@click.option("--strength", type=click.IntRange(20, 100), default=100, show_default=True, metavar="PERCENT", help="The band's cue strength, for --timeline.")
@click.option("--ack-wait", "ack_wait", default="0", show_default=True, metavar="SECONDS|never",
              help="For --timeline: when the wearer acknowledges a cue that waits for it (seconds after its first play, or never).")
def inspect(table: str, as_json: bool, timeline: bool, strength: int, ack_wait: str) -> None:
    """Decode a step table (.hcue; a routine is compiled first) and show it."""
    from . import render
    from .tables import load_table_or_routine

    try:
        ack_wait_ms = render.parse_ack_wait(ack_wait)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ack-wait") from None
    if ack_wait != "0" and not timeline:
        raise click.UsageError("--ack-wait sets what --timeline assumes; give --timeline too")
    data = load_table_or_routine(table)
    if timeline:
        # Streamed: a table of a few bytes can play for weeks, and `| head` wants only the start.
        events = render.timeline(data, strength, ack_wait_ms)
        out = click.get_text_stream("stdout")
        if as_json:
            out.writelines(render.timeline_json_chunks(events))
            out.write("\n")
        else:
            out.writelines(line + "\n" for line in render.timeline_lines(data, events, ack_wait_ms))
        out.flush()
        return
    if as_json:
        emit_json(render.table_json(data))
    else:
        click.echo(render.table_text(data))


# --------------------------------------------------------------------------
# Settings


@cli.group()
def config() -> None:
    """Settings in the user's config file (address: the default band for --to).

    The file is config.toml in the user's config folder (on Linux
    $XDG_CONFIG_HOME/handcue, by default ~/.config/handcue); `handcue config path`
    prints it.  HANDCUE_ADDRESS, when set, wins over the file.
    """


@config.command("set")
@click.argument("key", type=click.Choice(["address"]))
@click.argument("value")
def config_set(key: str, value: str) -> None:
    """Set KEY to VALUE (an address is checked first)."""
    from . import config as settings
    from .cli_common import checked_address

    if key == "address":
        value = checked_address(value)
    values = settings.read_config()
    values[key] = value
    say(f"{key} = {value} (in {settings.write_config(values)})")


@config.command("get")
@click.argument("key", type=click.Choice(["address"]))
def config_get(key: str) -> None:
    """Print KEY's value and where it comes from; exit 1 if it is not set."""
    from . import config as settings

    default = settings.default_address()
    if default is None:
        fail(f"{key} is not set (set it with `handcue config set {key} VALUE` or HANDCUE_ADDRESS)")
    click.echo(f"{default[0]}  (from {default[1]})")


@config.command("unset")
@click.argument("key", type=click.Choice(["address"]))
def config_unset(key: str) -> None:
    """Remove KEY from the config file."""
    from . import config as settings

    values = settings.read_config()
    values.pop(key, None)
    say(f"{key} removed from {settings.write_config(values)}")


@config.command("path")
def config_path() -> None:
    """Print the config file's path."""
    from .config import config_path as path

    click.echo(str(path()))


for _command in (*cli_band.COMMANDS, cli_pairing.pair, cli_pairing.unpair, *cli_settings.COMMANDS, *cli_calibrate.COMMANDS,
                 *cli_history.COMMANDS, *cli_visual.COMMANDS):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    import atexit
    import gc

    global _from_main
    _from_main = Phases(origin=STARTED)
    _from_main.add("imports (companion CLI)", 0.0, IMPORTED - STARTED)
    # One command per process: what its start loads stays until the exit, so the collector need not traverse it.
    freeze_what_is_loaded()
    # The process is ending: the interpreter need not collect what bleak and bumble built (0.1-0.3 s at exit).
    atexit.register(gc.freeze)
    cli(prog_name="handcue")
