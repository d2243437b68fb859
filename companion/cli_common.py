"""What every ``handcue`` command module shares: one-line failures, JSON output, the asyncio edge.

The command modules (:mod:`companion.cli`, :mod:`companion.cli_band`,
:mod:`companion.cli_visual`) import this module and never each other, except
that :mod:`companion.cli` adds their commands to the group.  Keep it light:
``handcue --help`` imports it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import click

EXIT_INVALID = 1

T = TypeVar("T")


def fail(message: str) -> NoReturn:
    for line in message.splitlines() or [message]:
        click.echo(f"error: {line}", err=True)
    sys.exit(EXIT_INVALID)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """The one place the CLI enters asyncio."""
    import asyncio

    return asyncio.run(coroutine)
