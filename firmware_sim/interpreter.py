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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from protocol.constants import FINGERS, CueKind, Hands, Iterate
from protocol.table import RECORD, SEGMENT, Header, LoopRecord, PatternDescriptor, StepRecord, TableRecord, decode_table, table_sections
from protocol.timeline import Cue, iteration_kind


class RunState(Enum):
    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"


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

    def __init__(self, data: bytes, on_cue: Callable[[Cue], None], *, verified: bool = False) -> None:
        """Load ``data``; unless the caller has just ``verified`` it, every SPEC check runs first."""
        if not verified:
            decode_table(data)  # a table that breaks a limit never runs
        self.data = data
        self.header = Header.parse(data)
        self.sections = table_sections(self.header)
        self.hands = Hands(self.header.hands).order
        self._on_cue = on_cue
        self._records: dict[int, TableRecord] = {}
        self._segments: dict[int, list[tuple[int, int]]] = {}
        self.reset()

    # ------------------------------------------------------------ reading

    def record(self, index: int) -> TableRecord:
        """Record ``index``, read from the table bytes (kept once read: the table never changes while loaded)."""
        cached = self._records.get(index)
        if cached is None:
            offset = self.sections.record(index)
            cached = self._records[index] = RECORD.parse(self.data[offset : offset + self.sections.record_size])
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
        self.iteration_end = 0
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

    def skip(self, t_ms: int) -> None:
        """Drop the rest of the current step record; the next record starts now."""
        if self.step is None:
            return
        self.skipped_ms += self.step_remaining_ms(t_ms)
        self.pc += 1
        self._enter(t_ms)
        self._flush(t_ms)

    # ------------------------------------------------------------ time

    def next_deadline(self) -> int | None:
        if self.state != RunState.RUNNING:
            return None
        due = [t for t in (self.next_tick, self.warn_at, self.iteration_end) if t is not None]
        return min(due)

    def advance(self, t_ms: int) -> None:
        """Process every event due at or before routine time ``t_ms``."""
        while (due := self.next_deadline()) is not None and due <= t_ms:
            step = self.step
            assert step is not None
            if self.next_tick == due:
                self._pending.append((CueKind.TICK, step.tick_pattern))
                following = due + step.tick_every_ms
                self.next_tick = following if following < self.iteration_end else None
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
                self.state = RunState.FINISHED
                self.finished_at = t_ms
                self._pending.append((CueKind.DONE, self.header.done_pattern))
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
        duration, tick, warn = step.duration_ms, step.tick_every_ms, step.warn_before_ms
        self.step_iteration = iteration
        self.iteration_start = t_ms
        self.iteration_end = t_ms + duration
        self.next_tick = t_ms + tick if tick and tick < duration else None
        self.warn_at = t_ms + duration - warn if warn else None
        if iteration == 0:
            self._pending.append((CueKind.START, step.start_pattern))
        else:
            kind = CueKind.NEXT if step.iterate == Iterate.NONE else iteration_kind(step.iterate)
            self._pending.append((kind, step.next_pattern))

    def _flush(self, t_ms: int) -> None:
        """Fire the strongest of the cues due at ``t_ms``, labelled with where the band is now."""
        firing = [(kind, pattern) for kind, pattern in self._pending if pattern is not None]
        self._pending = []
        if not firing:
            return
        kind, pattern = max(firing, key=lambda item: item[0])
        assert pattern is not None
        hand, finger = self.position()
        step = None if self.state == RunState.FINISHED else self.pc
        self._on_cue(Cue(t_ms, kind, pattern, step, hand, finger))

    # ------------------------------------------------------------ status

    def position(self) -> tuple[str | None, str | None]:
        """The hand and finger being treated now (None when not bound)."""
        if self.state == RunState.FINISHED:
            return None, None
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

    def step_remaining_ms(self, t_ms: int) -> int:
        """Time left in the current step record (all its remaining iterations)."""
        if self.step is None:
            return 0
        later = (self.step.count - self.step_iteration - 1) * self.step.duration_ms
        return max(0, self.iteration_end - t_ms) + later
