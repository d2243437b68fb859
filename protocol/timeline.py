"""What a band feels like, computed from a table alone.

:func:`table_timeline` walks the decoded table analytically with
:func:`protocol.iterations.iterations` (it does not simulate a clock) and
streams every motor event the band will produce when it
plays the table without pauses or skips, in constant memory.  The simulator's interpreter, which
executes the bytes tick by tick like firmware, is held to produce exactly these
events, so the two implementations check each other.

Rules (``protocol/SPEC.md``, "Executing a table"):

* a step iteration of duration ``d`` starts with its start cue (first
  iteration) or its next cue (later iterations), ticks at ``k * tick_every``
  for every ``k >= 1`` with ``k * tick_every < d``, and warns at
  ``d - warn_before``;
* a loop fires its round cue at the start of every iteration but the first;
* the done cue fires at the routine's total duration;
* cues that fall on the same millisecond are merged: the highest
  :class:`~protocol.constants.CueKind` wins;
* a cue that starts while an earlier pattern still plays cuts it short;
* an acknowledgement point (format 2, SPEC.md §12.10: a step's START with
  ``ack``, or DONE with the finish's ack) waits for the wearer: the cue
  repeats every :attr:`~protocol.constants.Ack.REPEAT_MS` until the press,
  at most until :attr:`~protocol.constants.Ack.GIVE_UP_MS`, and everything
  after it comes that much later.  How long the wearer takes is not in the
  table: ``ack_wait_ms`` assumes it, the same at every point -- 0 (the
  default: pressed at the first cue, so the timeline is that of the same
  table without acknowledgements) up to ``None`` (never pressed: the band
  gives up at the cap, the longest a routine can take).

:func:`cues_with_skips` and :func:`timeline_with_skips` give the same when the
band is told to skip (SPEC.md §12.6): a skip at routine time ``t`` cuts the
uninterrupted timeline from ``t`` to the end of the current iteration (or step
record), and everything from there on happens ``t`` earlier.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from .constants import Ack, CueKind, Iterate, SkipScope
from .iterations import iterations
from .strength import DEFAULT_STRENGTH, scaled_amplitude
from .table import LoopRecord, StepTable, build_tree


@dataclass(frozen=True)
class Cue:
    """A cue the band fires: when, why, which pattern, and where in the routine."""

    t_ms: int
    kind: CueKind
    pattern: int
    step: int | None
    hand: str | None
    finger: str | None


@dataclass(frozen=True)
class MotorEvent:
    """The motor runs at ``amplitude`` % for ``duration_ms`` from ``t_ms``, for a cue of kind ``cue``.

    :meth:`to_json` gives the event shape shared by ``handcue inspect
    --timeline --json`` and the simulator's ``--trace`` output.
    """

    t_ms: int
    amplitude: int
    duration_ms: int
    cue: CueKind
    pattern: int
    step: int | None
    hand: str | None
    finger: str | None

    @classmethod
    def of(cls, cue: Cue, t_ms: int, amplitude: int, duration_ms: int) -> MotorEvent:
        """The motor-on segment of ``cue`` that starts at ``t_ms``."""
        return cls(t_ms, amplitude, duration_ms, cue.kind, cue.pattern, cue.step, cue.hand, cue.finger)

    def to_json(self) -> dict[str, Any]:
        return {"t_ms": self.t_ms, "amplitude": self.amplitude, "duration_ms": self.duration_ms, "cue": self.cue.text_id,
                "pattern": self.pattern, "step": self.step, "hand": self.hand, "finger": self.finger}


def iteration_kind(iterate: Iterate) -> CueKind:
    """The cue kind that announces the next iteration of a step or loop."""
    return {Iterate.HAND: CueKind.SWITCH, Iterate.FINGER: CueKind.NEXT, Iterate.NONE: CueKind.ROUND}[iterate]


@dataclass(frozen=True)
class AckPoint:
    """Where the band waits for an acknowledgement: its first cue, and what the timeline assumed of the wearer."""

    t_ms: int
    """Routine time of the first cue (the step's START, or DONE)."""
    kind: CueKind
    """START for a step's acknowledgement, DONE for the finish's."""
    step: int | None
    hand: str | None
    finger: str | None
    wait_ms: int
    """How long the band waits here under the assumption: the press, or the cap when it never comes."""
    given: bool
    """Whether the assumed press comes before the cap (False: the band records a missed acknowledgement)."""
    plays: int
    """How many times the cue plays while waiting, the first cue included."""


def ack_wait(ack_wait_ms: int | None) -> tuple[int, bool]:
    """(how long the band waits, whether the acknowledgement is given) for a wearer who presses ``ack_wait_ms`` after the first cue."""
    if ack_wait_ms is None or ack_wait_ms >= Ack.GIVE_UP_MS:
        return Ack.GIVE_UP_MS, False
    if ack_wait_ms < 0:
        raise ValueError(f"acknowledgement after {ack_wait_ms} ms: a press comes at or after the cue")
    return ack_wait_ms, True


def ack_repeats(wait_ms: int, given: bool) -> range:
    """The times after the first cue at which it repeats while the band waits ``wait_ms``.

    Every ``REPEAT_MS`` up to and including a press (what is due at the
    press's instant plays first, as for every control) and before the cap.
    """
    last = wait_ms if given else Ack.GIVE_UP_MS - 1
    return range(Ack.REPEAT_MS, last + 1, Ack.REPEAT_MS)


@dataclass(frozen=True)
class _Candidate:
    t_ms: int
    kind: CueKind
    pattern: int | None
    step: int | None
    hand: str | None
    finger: str | None
    begins_step: bool
    ack: AckPoint | None = None
    """Set on the first cue of an acknowledgement point."""


def _candidates(table: StepTable, ack_wait_ms: int | None = 0) -> Iterator[_Candidate]:
    """Every cue candidate of ``table`` in time order, ties in emission order.

    The walk alone keeps them in order, so nothing is buffered: iterations
    start in time order, a loop pass's round cue comes at its start, and a
    step iteration's own cues (start, ticks, warning) lie in ``[t, t + d)``
    because a table's warning comes before the end of its step
    (:func:`protocol.table.decode_table` refuses others).  Ticks and the
    warning are merged, a tick before the warning at the same millisecond as
    it was emitted first.  An acknowledgement point's repeats follow its
    first cue, and every later time moves by its wait (``shift``).
    """
    wait, given = ack_wait(ack_wait_ms)
    shift = 0

    def waiting(t: int, kind: CueKind, pattern: int | None, step: int | None, hand: str | None, finger: str | None) -> Iterator[_Candidate]:
        for after in ack_repeats(wait, given):
            yield _Candidate(t + after, kind, pattern, step, hand, finger, False)

    for it in iterations(build_tree(table.records), table.hands):
        record, t = it.item.record, it.t_ms + shift
        if isinstance(record, LoopRecord):
            if it.index > 0:
                yield _Candidate(t, iteration_kind(record.iterate), record.round_pattern, None, it.hand, it.finger, False)
            continue
        step = it.item.index
        if it.index == 0:
            kind, pattern = CueKind.START, record.start_pattern
        else:
            kind = CueKind.NEXT if record.iterate == Iterate.NONE else iteration_kind(record.iterate)
            pattern = record.next_pattern
        if it.index == 0 and record.ack:
            plays = 1 + len(ack_repeats(wait, given))
            point = AckPoint(t, CueKind.START, step, it.hand, it.finger, wait, given, plays)
            yield _Candidate(t, kind, pattern, step, it.hand, it.finger, True, point)
            yield from waiting(t, CueKind.START, record.start_pattern, step, it.hand, it.finger)
            shift += wait
            t += wait
        else:
            yield _Candidate(t, kind, pattern, step, it.hand, it.finger, True)
        warn_at = t + record.duration_ms - record.warn_before_ms if record.warn_before_ms else None
        if record.tick_every_ms:
            for tick in range(t + record.tick_every_ms, t + record.duration_ms, record.tick_every_ms):
                if warn_at is not None and warn_at < tick:
                    yield _Candidate(warn_at, CueKind.WARN, record.warn_pattern, step, it.hand, it.finger, False)
                    warn_at = None
                yield _Candidate(tick, CueKind.TICK, record.tick_pattern, step, it.hand, it.finger, False)
        if warn_at is not None:
            yield _Candidate(warn_at, CueKind.WARN, record.warn_pattern, step, it.hand, it.finger, False)
    done_at = table.total_ms + shift
    if not table.done_ack:
        yield _Candidate(done_at, CueKind.DONE, table.done_pattern, None, None, None, False)
        return
    point = AckPoint(done_at, CueKind.DONE, None, None, None, wait, given, 1 + len(ack_repeats(wait, given)))
    yield _Candidate(done_at, CueKind.DONE, table.done_pattern, None, None, None, False, point)
    yield from waiting(done_at, CueKind.DONE, table.done_pattern, None, None, None)


def ack_points(table: StepTable, ack_wait_ms: int | None = 0) -> Iterator[AckPoint]:
    """Every acknowledgement point of ``table`` in play order, when the wearer presses ``ack_wait_ms`` after each first cue (None: never)."""
    return (cand.ack for cand in _candidates(table, ack_wait_ms) if cand.ack is not None)


def played_ms(table: StepTable, ack_wait_ms: int | None = 0) -> int:
    """Routine time at which the band reaches *finished*, played through without pauses or skips: ``total_ms`` plus every wait."""
    return table.total_ms + sum(point.wait_ms for point in ack_points(table, ack_wait_ms))


def table_cues(table: StepTable, ack_wait_ms: int | None = 0) -> Iterator[Cue]:
    """Every cue of ``table`` in time order, after merging coincident ones.

    A stream: memory stays constant however long the routine (a table of a
    few dozen bytes can play for weeks), and the first cues come at once.
    ``ack_wait_ms``: when the wearer acknowledges (see the module's notes).
    """
    for t, group in groupby(_candidates(table, ack_wait_ms), key=lambda cand: cand.t_ms):
        members = list(group)
        firing = [cand for cand in members if cand.pattern is not None]
        if not firing:
            continue
        winner = max(firing, key=lambda cand: cand.kind)
        where = next((cand for cand in members if cand.begins_step), winner)
        assert winner.pattern is not None
        yield Cue(t, winner.kind, winner.pattern, where.step, where.hand, where.finger)


def motor_events(table: StepTable, cues: Iterable[Cue], strength: int = DEFAULT_STRENGTH) -> Iterator[MotorEvent]:
    """Expand cues (in time order) into motor-on events at cue ``strength`` % (protocol.strength); a later cue cuts an earlier pattern short."""
    upcoming = iter(cues)
    cue = next(upcoming, None)
    while cue is not None:
        following = next(upcoming, None)
        cut_at = following.t_ms if following is not None else None
        t = cue.t_ms
        for segment in table.patterns[cue.pattern].segments:
            if cut_at is not None and t >= cut_at:
                break
            if segment.is_on:
                length = segment.duration_ms if cut_at is None else min(segment.duration_ms, cut_at - t)
                yield MotorEvent.of(cue, t, scaled_amplitude(segment.amplitude, strength), length)
            t += segment.duration_ms
        cue = following


def table_timeline(table: StepTable, strength: int = DEFAULT_STRENGTH, ack_wait_ms: int | None = 0) -> Iterator[MotorEvent]:
    """Every motor event the band set to cue ``strength`` % produces when it plays ``table`` through, as a stream (``list()`` it to keep it).

    ``ack_wait_ms``: when the wearer acknowledges, after each acknowledgement point's first cue (None: never).
    """
    return motor_events(table, table_cues(table, ack_wait_ms), strength)


def skip_target_ms(table: StepTable, t_ms: int, scope: SkipScope) -> int | None:
    """Where in the uninterrupted timeline a skip at its time ``t_ms`` jumps to; None past the last step.

    ``SkipScope.ITERATION`` jumps to the end of the step iteration playing at
    ``t_ms``; ``SkipScope.STEP`` to the end of the last iteration of its step
    record.  An iteration plays from its start up to, not including, its end:
    at the end the next one is already playing.
    """
    for it in iterations(build_tree(table.records), table.hands):
        if not it.is_step or not it.t_ms <= t_ms < it.t_ms + it.duration_ms:
            continue
        iterations_left = it.item.count - it.index if scope == SkipScope.STEP else 1
        return it.t_ms + iterations_left * it.duration_ms
    return None


def cues_with_skips(table: StepTable, skips: Sequence[tuple[int, SkipScope]]) -> Iterator[Cue]:
    """Every cue of ``table`` when the band skips at each (routine time, scope) of ``skips``, in time order.

    Cues due at a skip's instant fire first, as their own group; the cues of
    the skipped stretch are dropped; the group that was due at its end fires
    at the skip's instant, and every later cue comes that much earlier.
    Acknowledgements are assumed given at their first cue.
    """
    cut: list[tuple[int, int]] = []  # dropped stretches of the uninterrupted timeline: (from, to)
    dropped = 0
    for t_ms, scope in skips:
        at = t_ms + dropped  # the skip's time on the uninterrupted timeline
        target = skip_target_ms(table, at, scope)
        if target is None:
            continue  # nothing is playing: the band ignores it
        cut.append((at, target))
        dropped += target - at
    for cue in table_cues(table):
        if any(start < cue.t_ms < end for start, end in cut):
            continue
        shift = sum(end - start for start, end in cut if end <= cue.t_ms)
        yield Cue(cue.t_ms - shift, cue.kind, cue.pattern, cue.step, cue.hand, cue.finger)


def timeline_with_skips(table: StepTable, skips: Sequence[tuple[int, SkipScope]]) -> Iterator[MotorEvent]:
    """Every motor event when the band plays ``table`` and skips as :func:`cues_with_skips` says, never paused."""
    return motor_events(table, cues_with_skips(table, skips))
