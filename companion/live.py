"""The live view of ``handcue follow``: one line that fits the terminal, single keys from it, and the session they drive.

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

:func:`follow_live` puts them together: it renders the band's statuses and
acts on the keys (space pause/resume, n next, s stop, q quit following).

rich is imported here only, and this module only when ``follow`` or ``demo``
runs, so ``handcue --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from protocol.constants import BandState
from protocol.errors import HandCueError

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions
    from rich.live import Live

    from .client import BandClient, BandStatus

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


def live_parts(status: BandStatus, numbers: Mapping[int, int] | None = None) -> list[str]:
    """The parts of the live line, most useful first.

    First what to do now (the hand and finger, the technique) and the time
    left in it, which is exactly what ``skip`` skips (the band's
    ``step_remaining_ms``: the rest of this finger, hand or round); then the
    whole routine's time left, the step and the last cue felt.  While the band
    waits for the wearer's press (SPEC §12.10) the line says so first, with the
    time until the band gives up, then what the press starts (or that it
    confirms the finish).  The press is the band's own button: the protocol has
    no request for it, so no key of ``follow`` acknowledges for the wearer.
    ``numbers`` (record index -> step number, :func:`companion.render.step_numbers`)
    numbers the step as the card does; without it no step number is shown (the
    band's index counts loop records too, so it is not the step's number).
    """
    if status.state == BandState.FINISHED:
        return [f"finished after {short_time(status.elapsed_ms)}", f"{status.cues} cues"]
    if status.state == BandState.IDLE:
        return ["idle"]
    where = ", ".join(part for part in (f"{status.hand} hand" if status.hand else "", f"{status.finger} finger" if status.finger else "") if part)
    now = ": ".join(part for part in (where[:1].upper() + where[1:], technique_name(status)) if part)
    felt = f"felt: {status.last_cue.name.lower()}" if status.last_cue is not None else ""
    step = f"step {numbers[status.step]}" if numbers and status.step is not None and status.step in numbers else ""
    if status.state == BandState.WAITING:
        waiting = f"PRESS THE BAND'S BUTTON · gives up in {short_time(status.step_remaining_ms)}"
        if status.step is None:  # the finish waits: no step, no time left in the routine
            return [part for part in (waiting, "to confirm the routine is done", felt) if part]
        parts = [waiting, f"to start: {now}" if now else "to start the next step", f"routine {short_time(status.remaining_ms)} left",
                 step, felt]
        return [part for part in parts if part]
    state = "unknown state" if status.state is None else "" if status.state == BandState.RUNNING else status.state.name.lower()
    left = f"{short_time(status.step_remaining_ms)} left"
    parts = [state.upper(), f"{now} · {left}" if now else left,
             f"routine {short_time(status.remaining_ms)} left",
             step,
             felt]
    return [part for part in parts if part]


def fit(parts: Sequence[str], width: int, separator: str = " │ ") -> str:
    """``parts`` joined, dropping whole parts from the end until the line fits ``width`` columns.

    The first part is always kept; if it alone is too wide, rich crops it with an ellipsis.
    """
    from rich.cells import cell_len  # columns, not characters

    line = parts[0] if parts else ""
    for part in parts[1:]:
        longer = line + separator + part
        if cell_len(longer) > width:
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
            if not stream.isatty():
                return False
            fd = stream.fileno()
        except (AttributeError, ValueError, OSError):
            return False
        try:
            return os.tcgetpgrp(fd) == os.getpgrp()  # a background job (`handcue follow &`) leaves the terminal to the shell
        except OSError:
            return True  # not our controlling terminal (a pty handed in): no job control to respect

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



# --------------------------------------------------------------------------
# Following a session with keys

KEY_NAMES = {" ": "pause/resume", "n": "next", "s": "stop"}


async def follow_live(client: BandClient, out: TextIO, plain: Callable[[BandStatus], str], *, keys: KeyReader | None = None,
                      console: Console | None = None, numbers: Mapping[int, int] | None = None) -> BandStatus:
    """Show the session as it goes until the routine finishes or the person quits; returns the last status.

    On a terminal (or with ``console``) one :class:`LiveLine` stays in place;
    otherwise ``plain(status)`` is printed for each change of step, iteration,
    cue or state.  With active ``keys``: space pauses or resumes, n skips to
    the next iteration, s stops the routine, q quits following.  On quitting
    (q or Ctrl-C) it says whether the band goes on playing.  ``numbers`` numbers
    the steps in the live line (:func:`live_parts`).
    """
    session = _FollowSession(client, plain, keys, numbers)
    try:
        with LiveLine(out, console=console) as view:
            await session.run(view)
    except asyncio.CancelledError:  # Ctrl-C: the live line is finished; say what the band does now
        if session.latest is not None:
            out.write(f"stopped following; {band_goes_on(session.latest)}\n")
            out.flush()
        raise
    last = session.latest
    if last is None:
        raise HandCueError("the band sent no status")
    if session.stopped_here and last.state == BandState.IDLE:
        out.write("stopped: the routine was ended here; the band is idle\n")
    elif session.quit:
        out.write(f"stopped following; {band_goes_on(last)}\n")
    out.flush()
    return last


def band_goes_on(status: BandStatus) -> str:
    """Whether the band keeps playing once nobody follows it."""
    if status.state == BandState.RUNNING:
        return f"the band goes on playing ({short_time(status.remaining_ms)} left; handcue stop ends it)"
    if status.state == BandState.WAITING and status.step is None:  # the finish's acknowledgement
        return f"the band waits for the wearer's press to confirm the finish (it gives up in {short_time(status.step_remaining_ms)}), then finishes"
    if status.state == BandState.WAITING:
        return (f"the band waits for the wearer's press (it gives up in {short_time(status.step_remaining_ms)}), "
                "then goes on playing (handcue stop ends it)")
    if status.state == BandState.PAUSED:
        return "the band stays paused (handcue resume to go on)"
    return "the band is not playing"


class _FollowSession:
    """One follow: a task rendering the band's statuses and, with keys, a task acting on them."""

    def __init__(self, client: BandClient, plain: Callable[[BandStatus], str], keys: KeyReader | None,
                 numbers: Mapping[int, int] | None = None) -> None:
        self.client = client
        self.plain = plain
        self.numbers = numbers
        self.keys = keys if keys is not None and keys.active else None
        self.latest: BandStatus | None = None
        self.view: LiveLine | None = None
        self.stopped_here = False
        self.quit = False
        self.finishing = False

    async def run(self, view: LiveLine) -> None:
        self.view = view
        if self.keys is not None:
            view.note(KEYS_HELP)
        watching = asyncio.ensure_future(self.watch())
        controlling = asyncio.ensure_future(self.control()) if self.keys is not None else None
        try:
            if controlling is not None:
                await asyncio.wait([watching, controlling], return_when=asyncio.FIRST_COMPLETED)
                self.quit = controlling.done() and controlling.result()
            if not self.quit:
                try:
                    await watching
                except HandCueError:
                    if not (self.stopped_here and self.latest is not None and self.latest.state == BandState.IDLE):
                        raise  # stopped from elsewhere, or a link error
        finally:
            self.finishing = True
            for task in (watching, controlling):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, HandCueError):
                        await task

    def show(self, status: BandStatus) -> None:
        assert self.view is not None
        self.latest = status
        change = (status.step, status.iteration, status.last_cue, status.state, status.cues)
        self.view.show(live_parts(status, self.numbers), self.plain(status), change)

    async def watch(self) -> None:
        async for status in self.client.follow():
            if self.finishing:
                # Python 3.11's asyncio.wait_for can lose a cancellation that races a notification
                # (gh-86296); the next status, at most a poll period away, ends this loop then.
                return
            self.show(status)

    async def control(self) -> bool:
        """Act on keys; True when the person quits following, False when the terminal closed."""
        assert self.keys is not None and self.view is not None
        async for key in self.keys:
            if key in ("q", "Q"):
                return True
            if key not in KEY_NAMES:
                continue
            try:
                if key == " ":
                    paused = self.latest is not None and self.latest.state == BandState.PAUSED
                    self.show(await (self.client.resume() if paused else self.client.pause()))
                elif key == "n":
                    self.show(await self.client.skip())
                else:
                    self.stopped_here = True
                    self.show(await self.client.stop())
            except HandCueError as exc:  # pause when finished, a lost answer: say so and keep following
                self.view.note(f"{KEY_NAMES[key]}: {exc}")
        return False
