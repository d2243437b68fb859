"""The step-table interpreter, written the way band firmware runs it.

It keeps a program counter and a loop stack over the stored table bytes and
reads one record at a time in place, at the offsets :func:`protocol.table.table_sections`
gives, with the production layouts of :mod:`protocol.table`; it never builds
the whole-table model.  It is tickless with
millisecond resolution: :meth:`Interpreter.next_deadline` says when the next
thing happens and :meth:`Interpreter.advance` processes everything due, so a
virtual clock can jump from event to event.

This is deliberately an independent implementation of the execution rules in
``protocol/SPEC.md``; tests hold it to :func:`protocol.timeline.table_timeline`.

Acknowledgements (format 2, SPEC.md §12.10): a step with ``ack`` fires its
START cue and then waits, its time not yet running, repeating the start cue
every ``Ack.REPEAT_MS`` until :meth:`Interpreter.acknowledge` or until
``Ack.GIVE_UP_MS`` after the first cue; the finish's acknowledgement does the
same with DONE before the band reaches *finished*.  ``on_ack`` hears when a
wait begins and how it ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from protocol.constants import FINGERS, Ack, CueKind, Hands, Iterate, SkipScope
from protocol.table import (
    RECORD,
    SEGMENT,
    Header,
    LoopRecord,
    PatternDescriptor,
    StepRecord,
    TableRecord,
    decode_table,
    done_ack,
    reads_ack,
    table_sections,
    without_ack,
)
from protocol.timeline import Cue, iteration_kind


class RunState(Enum):
    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"


class AckOutcome(Enum):
    """What happened at an acknowledgement point."""

    WAITING = "waiting"
    """The first cue fired; the band waits."""
    GIVEN = "given"
    """The wearer pressed the button."""
    MISSED = "missed"
    """No press before the cap: the band went on."""
    CANCELLED = "cancelled"
    """A skip ended the wait (stop and restart end the whole session)."""


@dataclass(frozen=True)
class AckEvent:
    """An acknowledgement point changed: at routine time ``t_ms``, for a step's START (``step``: its record) or DONE."""

    t_ms: int
    kind: CueKind
    step: int | None
    outcome: AckOutcome


@dataclass
class _AckWait:
    kind: CueKind
    pattern: int | None
    since: int
    next_repeat: int | None

    @property
    def give_up(self) -> int:
        return self.since + Ack.GIVE_UP_MS


@dataclass
class _Frame:
    first: int
    end: int
    iterate: Iterate
    count: int
    round_pattern: int | None
    iteration: int = 0


class Interpreter:
    """Executes one table; emits :class:`~protocol.timeline.Cue` through ``on_cue``."""

    def __init__(self, data: bytes, on_cue: Callable[[Cue], None], *, verified: bool = False,
                 on_ack: Callable[[AckEvent], None] | None = None) -> None:
        """Load ``data``; unless the caller has just ``verified`` it, every SPEC check runs first."""
        if not verified:
            decode_table(data)  # a table that breaks a limit never runs
        self.data = data
        self.header = Header.parse(data)
        self.sections = table_sections(self.header)
        self.hands = Hands(self.header.hands).order
        self.reads_ack = reads_ack(self.header)
        self.done_ack = done_ack(self.header)
        self._on_cue = on_cue
        self._on_ack = on_ack or (lambda event: None)
        self._records: dict[int, TableRecord] = {}
        self._segments: dict[int, list[tuple[int, int]]] = {}
        self.reset()

    # ------------------------------------------------------------ reading

    def record(self, index: int) -> TableRecord:
        """Record ``index``, read from the table bytes (kept once read: the table never changes while loaded)."""
        cached = self._records.get(index)
        if cached is None:
            offset = self.sections.record(index)
            cached = RECORD.parse(self.data[offset : offset + self.sections.record_size])
            self._records[index] = cached = cached if self.reads_ack else without_ack(cached)
        return cached

    def pattern_segments(self, index: int) -> list[tuple[int, int]]:
        """(amplitude %, duration ms) segments of a pattern, read from the table (and kept)."""
        cached = self._segments.get(index)
        if cached is None:
            cached = self._segments[index] = self._read_segments(index)
        return cached

    def _read_segments(self, index: int) -> list[tuple[int, int]]:
        descriptor = PatternDescriptor.parse(self.data[self.sections.pattern(index) :])
        segments = []
        for n in range(descriptor.first_segment, descriptor.first_segment + descriptor.segment_count):
            segment = SEGMENT.parse(self.data[self.sections.segment(n) :])
            segments.append((segment.amplitude, segment.duration_ms))
        return segments

    @property
    def total_ms(self) -> int:
        return self.header.total_ms

    # ------------------------------------------------------------ control

    def reset(self) -> None:
        self.state = RunState.IDLE
        self.pc = 0
        self.frames: list[_Frame] = []
        self.step: StepRecord | None = None
        self.step_iteration = 0
        self.iteration_start = 0
        """Routine time the current iteration began (its first cue; an acknowledgement wait comes after it)."""
        self.iteration_end: int | None = 0
        """Routine time the current iteration ends; None while it waits for an acknowledgement."""
        self.ack: _AckWait | None = None
        """The acknowledgement the band waits for, if any."""
        self.waited_ms = 0
        """Routine time spent in acknowledgement waits that ended."""
        self.next_tick: int | None = None
        self.warn_at: int | None = None
        self.skipped_ms = 0
        self.finished_at = 0
        self._pending: list[tuple[CueKind, int | None]] = []

    def start(self) -> None:
        """Begin at record 0 at routine time 0."""
        self.reset()
        self.state = RunState.RUNNING
        self._enter(0)
        self._flush(0)

    def pause(self) -> None:
        self.state = RunState.PAUSED

    def resume(self) -> None:
        self.state = RunState.RUNNING

    def skip(self, t_ms: int, scope: SkipScope = SkipScope.ITERATION) -> None:
        """End the current iteration (or, for ``SkipScope.STEP``, the whole step record) at ``t_ms``.

        Everything then goes on as if that iteration or record had ended at
        ``t_ms``: the next iteration's NEXT or SWITCH cue, or the next record
        (a loop's next round, the next step, or DONE).
        """
        wait = self.ack
        if wait is not None:
            self._end_wait(t_ms, AckOutcome.CANCELLED)
            if wait.kind == CueKind.DONE:
                return
        if self.step is None:
            return
        self.skipped_ms += self.skip_remaining_ms(t_ms, scope)
        if scope == SkipScope.ITERATION and self.step_iteration + 1 < self.step.count:
            self._begin_iteration(t_ms, self.step_iteration + 1)
        else:
            self.pc += 1
            self._enter(t_ms)
        self._flush(t_ms)

    # ------------------------------------------------------------ time

    def next_deadline(self) -> int | None:
        if self.state != RunState.RUNNING:
            return None
        if self.ack is not None:
            return self.ack.give_up if self.ack.next_repeat is None else min(self.ack.next_repeat, self.ack.give_up)
        due = [t for t in (self.next_tick, self.warn_at, self.iteration_end) if t is not None]
        return min(due)

    def acknowledge(self, t_ms: int) -> bool:
        """The wearer pressed at ``t_ms`` (everything due before was processed): end the wait; False when none was pending."""
        if self.state != RunState.RUNNING or self.ack is None:
            return False
        self._end_wait(t_ms, AckOutcome.GIVEN)
        return True

    def advance(self, t_ms: int) -> None:
        """Process every event due at or before routine time ``t_ms``."""
        while (due := self.next_deadline()) is not None and due <= t_ms:
            wait = self.ack
            if wait is not None:
                if wait.next_repeat == due:
                    self._pending.append((wait.kind, wait.pattern))
                    following = due + Ack.REPEAT_MS
                    wait.next_repeat = following if following < wait.give_up else None
                if wait.give_up == due:
                    self._end_wait(due, AckOutcome.MISSED)
                self._flush(due)
                continue
            step, end = self.step, self.iteration_end
            assert step is not None and end is not None  # no wait: the iteration's time runs
            if self.next_tick == due:
                self._pending.append((CueKind.TICK, step.tick_pattern))
                following = due + step.tick_every_ms
                self.next_tick = following if following < end else None
            if self.warn_at == due:
                self._pending.append((CueKind.WARN, step.warn_pattern))
                self.warn_at = None
            if self.iteration_end == due:
                if self.step_iteration + 1 < step.count:
                    self._begin_iteration(due, self.step_iteration + 1)
                else:
                    self.pc += 1
                    self._enter(due)
            self._flush(due)

    # ------------------------------------------------------------ walking

    def _enter(self, t_ms: int) -> None:
        """Move from ``pc`` to the next step to play, through loop ends and starts."""
        while True:
            if self.frames and self.pc == self.frames[-1].end:
                frame = self.frames[-1]
                frame.iteration += 1
                if frame.iteration < frame.count:
                    self.pc = frame.first
                    self._pending.append((iteration_kind(frame.iterate), frame.round_pattern))
                else:
                    self.frames.pop()
                continue
            if self.pc >= self.header.record_count:
                self.step = None
                self._pending.append((CueKind.DONE, self.header.done_pattern))
                if self.done_ack:
                    self._wait(t_ms, CueKind.DONE, self.header.done_pattern)  # finished once acknowledged (or given up)
                else:
                    self.state = RunState.FINISHED
                    self.finished_at = t_ms
                return
            record = self.record(self.pc)
            if isinstance(record, LoopRecord):
                self.frames.append(_Frame(self.pc + 1, self.pc + 1 + record.body_count, record.iterate, record.count, record.round_pattern))
                self.pc += 1
                continue
            self.step = record
            self._begin_iteration(t_ms, 0)
            return

    def _begin_iteration(self, t_ms: int, iteration: int) -> None:
        step = self.step
        assert step is not None
        self.step_iteration = iteration
        self.iteration_start = t_ms
        if iteration == 0:
            self._pending.append((CueKind.START, step.start_pattern))
        else:
            kind = CueKind.NEXT if step.iterate == Iterate.NONE else iteration_kind(step.iterate)
            self._pending.append((kind, step.next_pattern))
        if iteration == 0 and step.ack:
            self._wait(t_ms, CueKind.START, step.start_pattern)
        else:
            self._run_iteration(t_ms)

    def _run_iteration(self, t_ms: int) -> None:
        """The current iteration's time runs from ``t_ms``: its end, ticks and warning."""
        step = self.step
        assert step is not None
        duration, tick, warn = step.duration_ms, step.tick_every_ms, step.warn_before_ms
        self.iteration_end = t_ms + duration
        self.next_tick = t_ms + tick if tick and tick < duration else None
        self.warn_at = t_ms + duration - warn if warn else None

    def _wait(self, t_ms: int, kind: CueKind, pattern: int | None) -> None:
        """Wait for an acknowledgement after the cue just pended at ``t_ms``; nothing else is scheduled meanwhile."""
        self.ack = _AckWait(kind, pattern, t_ms, t_ms + Ack.REPEAT_MS)
        self.iteration_end = self.next_tick = self.warn_at = None
        self._on_ack(AckEvent(t_ms, kind, self.pc if kind == CueKind.START else None, AckOutcome.WAITING))

    def cancel_wait(self, t_ms: int) -> None:
        """A stop or a new start ends the session during a wait: the point counts neither way, but is closed."""
        wait = self.ack
        if wait is None:
            return
        self.ack = None
        self._on_ack(AckEvent(t_ms, wait.kind, self.pc if wait.kind == CueKind.START else None, AckOutcome.CANCELLED))

    def _end_wait(self, t_ms: int, outcome: AckOutcome) -> None:
        """The wait ends at ``t_ms``: the step's time runs from there, or the band reaches *finished*."""
        wait = self.ack
        assert wait is not None
        self.ack = None
        self.waited_ms += t_ms - wait.since
        if wait.kind == CueKind.DONE:
            self.state = RunState.FINISHED
            self.finished_at = t_ms
        elif outcome != AckOutcome.CANCELLED:
            self._run_iteration(t_ms)
        self._on_ack(AckEvent(t_ms, wait.kind, self.pc if wait.kind == CueKind.START else None, outcome))

    def _flush(self, t_ms: int) -> None:
        """Fire the strongest of the cues due at ``t_ms``, labelled with where the band is now."""
        firing = [(kind, pattern) for kind, pattern in self._pending if pattern is not None]
        self._pending = []
        if not firing:
            return
        kind, pattern = max(firing, key=lambda item: item[0])
        assert pattern is not None
        hand, finger = self.position()
        step = None if self.step is None else self.pc
        self._on_cue(Cue(t_ms, kind, pattern, step, hand, finger))

    # ------------------------------------------------------------ status

    def position(self) -> tuple[str | None, str | None]:
        """The hand and finger being treated now (None when not bound)."""
        if self.state == RunState.FINISHED or self.step is None:
            return None, None  # finished, or waiting for the finish's acknowledgement: nothing is bound
        hand = self.hands[0] if len(self.hands) == 1 else None
        finger = None
        bindings = [(frame.iterate, frame.iteration) for frame in self.frames]
        if self.step is not None:
            bindings.append((self.step.iterate, self.step_iteration))
        for iterate, iteration in bindings:
            if iterate == Iterate.HAND:
                hand = self.hands[iteration]
            elif iterate == Iterate.FINGER:
                finger = FINGERS[iteration]
        return hand, finger

    def skip_remaining_ms(self, t_ms: int, scope: SkipScope = SkipScope.ITERATION) -> int:
        """What a skip of ``scope`` at ``t_ms`` drops: the rest of the iteration, or of the step record with all its iterations."""
        if self.step is None:
            return 0
        later = (self.step.count - self.step_iteration - 1) * self.step.duration_ms if scope == SkipScope.STEP else 0
        return self.step_remaining_ms(t_ms) + later

    def step_remaining_ms(self, t_ms: int) -> int:
        """What is left of the current iteration at ``t_ms``: all of it while it waits for an acknowledgement."""
        if self.step is None:
            return 0
        if self.iteration_end is None:
            return self.step.duration_ms
        return max(0, self.iteration_end - t_ms)

    def ack_left_ms(self, t_ms: int) -> int:
        """Routine time from ``t_ms`` until the band gives up the acknowledgement it waits for; 0 when none waits."""
        return 0 if self.ack is None else max(0, self.ack.give_up - t_ms)

    def waited_until(self, t_ms: int) -> int:
        """Routine time spent waiting for acknowledgements up to ``t_ms``, the wait under way included."""
        return self.waited_ms + (t_ms - self.ack.since if self.ack is not None else 0)
