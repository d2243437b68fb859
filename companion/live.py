"""The live view of ``handcue follow``: one line that fits the terminal, and single keys from it.

:class:`LiveLine` keeps one status line in place on a terminal with rich's
``Live`` (rich handles the cursor, the width and resizes; nothing here writes
escape codes), and prints one plain line per change when the output is piped.
The line puts the most useful part first (what to do now, and the time left
in it) and drops whole parts from the end, least useful first, when the
terminal is narrow.

:class:`KeyReader` reads single key presses from a terminal without blocking
the event loop: stdin in cbreak mode (no echo, no line buffering, Ctrl-C still
interrupts), watched with ``loop.add_reader``.  The terminal is restored on
every way out (normal exit, error, Ctrl-C, SIGTERM, SIGHUP).  When stdin is not
a terminal, or on a platform without termios, it reads no keys.

rich is imported here only, and this module only when ``follow`` or ``demo``
runs, so ``handcue --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from protocol.constants import BandState

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions
    from rich.live import Live

    from .client import BandStatus

KEYS_HELP = "keys: space pause/resume · n next · s stop · q quit following"
"""What the keys of ``follow`` do, shown once above the live line."""


def short_time(ms: int) -> str:
    """A time left, rounded up to the second: ``45 s``, ``4:05``, ``1:02:03``."""
    seconds = math.ceil(max(0, ms) / 1000)
    if seconds < 60:
        return f"{seconds} s"
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def technique_name(status: BandStatus) -> str:
    from .techniques import TECHNIQUES

    if status.technique is None:
        return ""
    known = TECHNIQUES.get(status.technique.text_id)
    return known.name if known is not None else status.technique.text_id


def live_parts(status: BandStatus) -> list[str]:
    """The parts of the live line, most useful first.

    First what to do now (the hand and finger, the technique) and the time
    left in it, which is exactly what ``skip`` skips (the band's
    ``step_remaining_ms``: the rest of this finger, hand or round); then the
    whole routine's time left, the step and the last cue felt.
    """
    if status.state == BandState.FINISHED:
        return [f"finished after {short_time(status.elapsed_ms)}", f"{status.cues} cues"]
    if status.state == BandState.IDLE:
        return ["idle"]
    where = ", ".join(part for part in (f"{status.hand} hand" if status.hand else "", f"{status.finger} finger" if status.finger else "") if part)
    now = ": ".join(part for part in (where[:1].upper() + where[1:], technique_name(status)) if part)
    state = "unknown state" if status.state is None else "" if status.state == BandState.RUNNING else status.state.name.lower()
    left = f"{short_time(status.step_remaining_ms)} left"
    parts = [state.upper(), f"{now} · {left}" if now else left,
             f"routine {short_time(status.remaining_ms)} left",
             f"step {status.step}" if status.step is not None else "",
             f"felt: {status.last_cue.name.lower()}" if status.last_cue is not None else ""]
    return [part for part in parts if part]


def fit(parts: Sequence[str], width: int, separator: str = " │ ") -> str:
    """``parts`` joined, dropping whole parts from the end until the line fits ``width`` columns.

    The first part is always kept; if it alone is too wide, rich crops it with an ellipsis.
    """
    line = parts[0] if parts else ""
    for part in parts[1:]:
        longer = line + separator + part
        if len(longer) > width:
            break
        line = longer
    return line


class StatusLine:
    """A rich renderable: the parts that fit the width rich offers when it draws (so a resize refits)."""

    def __init__(self, parts: Sequence[str]) -> None:
        self.parts = list(parts)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Any]:
        from rich.text import Text

        yield Text(fit(self.parts, options.max_width), no_wrap=True, overflow="ellipsis", end="")


class LiveLine:
    """One status line: updated in place on a terminal (rich ``Live``), one plain line per change otherwise.

    Use it as a context manager: on the way out (also on an error or Ctrl-C)
    the live line is finished with a newline, so whatever is printed next
    starts on a line of its own.
    """

    def __init__(self, out: TextIO | None = None, *, console: Console | None = None) -> None:
        self.out = out or sys.stdout
        self.console = console
        self.live: Live | None = None
        self._shown: object = None

    @property
    def in_place(self) -> bool:
        return self.console is not None or self.out.isatty()

    def __enter__(self) -> LiveLine:
        if self.in_place:
            from rich.console import Console
            from rich.live import Live

            console = self.console or Console(file=self.out)
            self.live = Live(console=console, auto_refresh=False, transient=False, redirect_stdout=False, redirect_stderr=False)
            self.live.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None) -> None:
        if self.live is not None:
            self.live.stop()  # leaves the last line and moves to the next one
            self.live = None

    def show(self, parts: Sequence[str], plain: str, change: object) -> None:
        """Show ``parts`` in place on a terminal; when piped, print ``plain`` if ``change`` differs from the last one."""
        if self.live is not None:
            self.live.update(StatusLine(parts), refresh=True)
        elif change != self._shown:
            self.out.write(plain + "\n")
            self.out.flush()
        self._shown = change

    def note(self, message: str) -> None:
        """A line of its own above the live line (or after the plain lines)."""
        if self.live is not None:
            self.live.console.print(message, markup=False, highlight=False, soft_wrap=True)
        else:
            self.out.write(message + "\n")
            self.out.flush()


class KeyReader:
    """Single key presses from a terminal, as an async iterator; no keys when ``stream`` is not a terminal.

    ``async with KeyReader() as keys: async for key in keys: ...``
    """

    RESTORED_ON = (signal.SIGTERM, *((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()))

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdin
        self.active = False
        self._fd = -1
        self._saved: list[Any] | None = None
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous_handlers: dict[int, Any] = {}

    @staticmethod
    def available(stream: TextIO) -> bool:
        try:
            import termios  # noqa: F401  (POSIX only)
        except ImportError:
            return False
        try:
            return stream.isatty()
        except (AttributeError, ValueError):
            return False

    async def __aenter__(self) -> KeyReader:
        if not self.available(self.stream):
            return self
        import termios
        import tty

        self._fd = self.stream.fileno()
        self._saved = termios.tcgetattr(self._fd)
        for number in self.RESTORED_ON:  # a kill must not leave the terminal without echo
            self._previous_handlers[number] = signal.signal(number, self._restore_and_die)
        tty.setcbreak(self._fd)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._readable)
        self.active = True
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading and give the terminal back as it was (safe to call twice)."""
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop = None
        self._restore()
        for number, handler in self._previous_handlers.items():
            signal.signal(number, handler)
        self._previous_handlers = {}
        self.active = False

    def _restore(self) -> None:
        if self._saved is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def _restore_and_die(self, number: int, frame: FrameType | None) -> None:
        self._restore()
        previous = self._previous_handlers.get(number, signal.SIG_DFL)
        if callable(previous):
            previous(number, frame)
            return
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 64)
        except OSError:
            data = b""
        if not data:  # the terminal went away: no more keys
            assert self._loop is not None
            self._loop.remove_reader(self._fd)
            self._queue.put_nowait("")
            return
        for key in data.decode(errors="ignore"):
            self._queue.put_nowait(key)

    def __aiter__(self) -> KeyReader:
        return self

    async def __anext__(self) -> str:
        if not self.active:
            await asyncio.Event().wait()  # no terminal: no key ever comes (the caller cancels this)
        key = await self._queue.get()
        if not key:
            raise StopAsyncIteration
        return key

