"""``handcue calibrate``: find with the wearer the weakest cue strength they feel and tell apart, and store it.

Interactive only: it asks questions on a terminal.  Without one (or with
``--json``) it says in one line what to pass instead.  The flow is
:func:`companion.calibrate.calibrate`; this module gives it click's prompts.
Defined without importing :mod:`companion.cli`, which registers :data:`COMMANDS`.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING

import click

from .cli_band import with_band
from .cli_common import address_option, ble_options, complete_routine, fail, json_option, run, timeout_option

if TYPE_CHECKING:
    from .calibrate import Calibration
    from .client import BandClient

STRENGTHS_DEFAULT = "40,70,100"


class ClickPrompts:
    """The flow's prompts on the terminal: lines printed, yes/no asked with click."""

    def show(self, text: str) -> None:
        click.echo(text)

    def confirm(self, question: str, default: bool) -> bool:
        import termios

        # Keys pressed while the cues played must not answer this question.
        with contextlib.suppress(termios.error, OSError, ValueError):
            termios.tcflush(sys.stdin, termios.TCIFLUSH)
        return click.confirm(question, default=default)


def _not_interactive(address: str, why: str) -> str:
    return (f"calibrate asks the wearer what they feel, on a terminal ({why}); "
            f"to set the strength without asking, run: handcue settings --to {address} --strength PERCENT")


@click.command()
@address_option
@click.option("--strengths", default=STRENGTHS_DEFAULT, show_default=True, metavar="P,P,...",
              help="Cue strengths (%, 20 to 100) to try, weakest first.")
@click.option("--routine", metavar="ROUTINE", shell_complete=complete_routine,
              help="Play the cue patterns this routine uses (its own ones included) instead of the shipped vocabulary.")
@timeout_option()
@json_option
@ble_options
def calibrate(address: str, strengths: str, routine: str | None, timeout: float | None, as_json: bool, hci: str | None,
              ble_backend: str | None) -> None:
    """Find the weakest cue strength the wearer feels: the band plays its cues, you say what you felt.

    For each strength, weakest first, the band plays every cue of the vocabulary
    in turn with its name printed; answer whether you felt them all and could
    tell them apart.  The first strength with two yeses is proposed and, once
    you confirm, stored on the band.  The band's routine is never touched.
    """
    from .calibrate import parse_strengths, routine_cues, vocabulary_cues

    try:  # a bad value is named first, terminal or not
        tried = parse_strengths(strengths)
    except ValueError as exc:
        raise click.BadParameter(str(exc).removeprefix(f"--strengths {strengths}: "), param_hint="--strengths") from None
    if as_json:
        fail(_not_interactive(address, "--json has no one to ask"), as_json=True)
    if not sys.stdin.isatty():
        fail(_not_interactive(address, "standard input is not one"))
    if routine is not None:
        from .routine import load_routine

        cues = routine_cues(load_routine(routine))
    else:
        cues = vocabulary_cues()

    async def job(client: BandClient) -> Calibration:
        from .calibrate import calibrate as calibrate_flow

        return await calibrate_flow(client, ClickPrompts(), tried, cues)

    run(with_band(address, timeout, job, hci, ble_backend))


COMMANDS = (calibrate,)
