"""Visual commands of the ``handcue`` CLI: ``plot`` (timeline image) and ``card`` (printable card).

:mod:`companion.cli` adds :data:`COMMANDS` to its group.  matplotlib is
imported by ``plot`` only, when it draws.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from protocol.strength import MAX_STRENGTH, MIN_STRENGTH

from .cli_common import complete_routine, say

PLOT_SUFFIXES = {".png": "png", ".svg": "svg"}
CARD_SUFFIXES = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", "-": "md"}
"""``-`` (standard output) writes Markdown."""


def output_format(output: Path, suffixes: dict[str, str]) -> str:
    """The format named by ``output``'s suffix, or :class:`click.BadParameter` (exit code 2)."""
    fmt = suffixes.get("-" if str(output) == "-" else output.suffix.lower())
    if fmt is None:
        raise click.BadParameter(f"{output.name!r} does not end in one of {', '.join(s for s in suffixes if s != '-')}")
    return fmt


def suffix_checked(suffixes: dict[str, str]) -> Callable[[click.Context, click.Parameter, Path], Path]:
    """An option callback refusing an output whose suffix is not in ``suffixes``, before any work is done."""

    def check(ctx: click.Context, param: click.Parameter, value: Path) -> Path:
        output_format(value, suffixes)
        return value

    return check


@click.command()
@click.argument("routine", metavar="ROUTINE|TABLE", shell_complete=complete_routine)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, callback=suffix_checked(PLOT_SUFFIXES),
              help="Image to write: FILE.png or FILE.svg.")
def plot(routine: str, output: Path) -> None:
    """Draw a routine or step table as a timeline image (needs matplotlib).

    Steps are coloured bands (one colour per technique) with the hand and
    finger they play on; every cue the band fires is marked at its time.
    """
    from .plot import plot_routine
    from .tables import load_table_or_routine

    plot_routine(load_table_or_routine(routine), output)
    say(f"wrote {output}")


@click.command()
@click.argument("routine", shell_complete=complete_routine)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, callback=suffix_checked(CARD_SUFFIXES),
              help="Card to write: FILE.html or FILE.md; - writes Markdown to standard output.")
@click.option("--strength", type=click.IntRange(MIN_STRENGTH, MAX_STRENGTH), metavar="PERCENT",
              help="Print this cue strength on the card: the setting of the wearer's band (handcue settings, handcue calibrate).")
def card(routine: str, output: Path, strength: int | None) -> None:
    """Write a printable routine card: steps, timings and what each vibration means."""
    from .card import routine_card
    from .routine import load_routine

    fmt = output_format(output, CARD_SUFFIXES)
    text = routine_card(load_routine(routine), fmt, strength)
    if str(output) == "-":
        click.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    say(f"wrote {output}")


COMMANDS = (plot, card)
