"""The band: storage, interpreter, motor, button and battery around one clock.

:class:`Band` is synchronous and deterministic: everything happens in
:meth:`Band.process` at a time the caller gives.  :meth:`Band.run` is the async
main loop a simulator process uses: it waits on the injected clock for the next
deadline or for a wake-up from the protocol handler.

Routine time (what traces and status report) is band time minus the time spent
paused, measured from the start of the session.  It runs while the band waits
for an acknowledgement (SPEC.md §12.10): the repeated cues have times, and what
follows the wait comes that much later.  STATUS reports such a wait as WAITING
(§18.1), and the band announces its start and its end like any state change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from enum import Enum
from typing import Any

from protocol.constants import NO_PATTERN, BandState, CueKind, SkipScope, Status, TechniqueCode
from protocol.errors import band_error
from protocol.messages import StatusReport
from protocol.strength import check_strength
from protocol.table import table_name
from protocol.timeline import Cue, MotorEvent

from .clock import Clock
from .faults import FlashError
from .history import ClockKind, Outcome, Session, SessionTracker
from .interpreter import AckEvent, AckOutcome, Interpreter, RunState
from .motor import Motor
from .storage import Storage

logger = logging.getLogger(__name__)

Listener = Callable[[dict[str, Any]], None]


class Button(Enum):
    """The band's one button: a press acknowledges a cue that waits for it, else starts, pauses or resumes;
    a long press skips to the next iteration."""

    PRESS = "press"
    LONG_PRESS = "long"


class Band:
    """A simulated HandCue band."""

    def __init__(self, storage: Storage, clock: Clock, band_id: int = 0x1A2B, battery_percent: float = 100.0) -> None:
        self.storage = storage
        self.clock = clock
        self.band_id = band_id
        self.battery_percent = battery_percent
        self.listeners: list[Listener] = []
        self.motor = Motor(self._motor_event, strength=storage.settings.strength)
        self._preview = Motor(self._preview_event)
        """The same motor playing a PREVIEW, on band time (no routine time runs while it plays)."""
        self._preview_kind: CueKind | None = None
        self._session: SessionTracker | None = None
        self._wall_offset: int | None = None
        """Unix time in ms minus band time, once a companion set the clock (SET_TIME); kept in RAM only."""
        self._paused_since = 0
        self.interpreter: Interpreter | None = None
        self._origin = 0
        self._paused_at = 0
        self.last_cue: CueKind | None = None
        self.cue_count = 0
        self.acks_given = 0
        self.acks_missed = 0
        """Acknowledgements given and missed in the current (or last) session."""
        self.wake = asyncio.Event()
        self.reload()

    # ------------------------------------------------------------ events

    def _emit(self, event: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            listener(event)

    def _motor_event(self, event: MotorEvent) -> None:
        self.battery_percent = max(0.0, self.battery_percent - event.duration_ms * 1e-5)
        self._emit({"event": "motor", **event.to_json()})

    def _preview_event(self, event: MotorEvent) -> None:
        self.battery_percent = max(0.0, self.battery_percent - event.duration_ms * 1e-5)
        self._emit({"event": "motor", "preview": True, "t_ms": event.t_ms, "amplitude": event.amplitude, "duration_ms": event.duration_ms,
                    "cue": self._preview_kind.text_id if self._preview_kind else None, "strength": self._preview.strength})

    def _cue(self, cue: Cue) -> None:
        assert self.interpreter is not None
        self.last_cue = cue.kind
        self.cue_count += 1
        self.motor.play(cue, self.interpreter.pattern_segments(cue.pattern), cue.t_ms)
        self._emit({"event": "cue", "t_ms": cue.t_ms, "cue": cue.kind.name.lower(), "pattern": cue.pattern,
                    "step": cue.step, "hand": cue.hand, "finger": cue.finger})

    def _ack(self, event: AckEvent) -> None:
        """An acknowledgement point began or ended (from the interpreter): tell listeners, count what it came to."""
        self._emit({"event": "ack", "t_ms": event.t_ms, "cue": event.kind.text_id, "step": event.step, "outcome": event.outcome.value})
        if event.outcome in (AckOutcome.GIVEN, AckOutcome.MISSED):
            self._ack_ended(given=event.outcome == AckOutcome.GIVEN)

    def _ack_ended(self, *, given: bool) -> None:
        """The one place an acknowledgement is counted as given or missed, for the band and its session history."""
        if given:
            self.acks_given += 1
        else:
            self.acks_missed += 1
        self.note_ack(given)

    def announce_state(self) -> None:
        """Tell listeners the current state (after every state change)."""
        status = self.status()
        state = status.to_json()["state"]  # events are JSON lines: the state by name
        self._emit({"event": "state", "t_ms": status.elapsed_ms, "state": state, "step": status.step})

    # ------------------------------------------------------------ time

    def routine_ms(self, now_ms: int | None = None) -> int:
        now = self.clock.now_ms() if now_ms is None else now_ms
        if self.interpreter is None or self.interpreter.state == RunState.IDLE:
            return 0
        if self.interpreter.state == RunState.PAUSED:
            return self._paused_at
        return now - self._origin

    def process(self, now_ms: int | None = None) -> None:
        """Play everything due up to band time ``now_ms`` (default: the clock's now)."""
        self._preview.advance(self.clock.now_ms() if now_ms is None else now_ms)
        if self.interpreter is None:
            return
        was, waiting = self.interpreter.state, self.ack_pending
        t = self.routine_ms(now_ms)
        if was == RunState.RUNNING:
            self.interpreter.advance(t)
        if self.interpreter.state != RunState.PAUSED:
            self.motor.advance(t)
        self._observe()
        if self.interpreter.state != was and self.interpreter.state == RunState.FINISHED:
            self._end_session(Outcome.FINISHED)
        if self.interpreter.state != was or self.ack_pending != waiting:
            # An acknowledgement wait that began (after its cue) or ended (given up) changes the state STATUS reports too.
            self.announce_state()

    def next_deadline(self) -> int | None:
        """Band time of the next thing to do, or None when nothing is scheduled."""
        due = [self._preview.next_deadline()]  # already on band time
        if self.interpreter is not None and self.interpreter.state not in (RunState.IDLE, RunState.PAUSED):
            due += [t + self._origin for t in (self.interpreter.next_deadline(), self.motor.next_deadline()) if t is not None]
        times = [t for t in due if t is not None]
        return min(times) if times else None

    async def run(self) -> None:
        """Main loop: process, then sleep until the next deadline or a wake-up."""
        while True:
            self.process()
            self.wake.clear()
            await self.clock.wait(self.next_deadline(), self.wake)

    def poke(self) -> None:
        """Wake the main loop after a command changed the schedule."""
        self.wake.set()

    # ------------------------------------------------------------ commands

    def reload(self) -> None:
        """Load the active routine from storage (at boot and after a commit)."""
        data = self.storage.active_table()
        self.motor.cut(self.routine_ms())
        # Storage hands out only tables it verified (at commit and again at boot).
        self.interpreter = Interpreter(data, self._cue, verified=True, on_ack=self._ack) if data is not None else None
        self.routine_name = table_name(data) if data is not None else ""  # verified: only the name is read

    def _require(self, *states: RunState) -> Interpreter:
        if self.interpreter is None:
            raise band_error(Status.NO_ROUTINE, "the band holds no routine; upload one first")
        if self.interpreter.state not in states:
            allowed = " or ".join(s.value for s in states)
            raise band_error(Status.BAD_STATE, f"the band is {self.interpreter.state.value}; this needs {allowed}")
        return self.interpreter

    def start(self) -> None:
        interpreter = self._require(RunState.IDLE, RunState.FINISHED, RunState.RUNNING, RunState.PAUSED)
        if interpreter.state in (RunState.RUNNING, RunState.PAUSED):
            self.process()
            interpreter.cancel_wait(self.routine_ms())
            self._end_session(Outcome.RESTARTED)
        self.motor.cut(self.routine_ms())
        self._preview.cut(self.clock.now_ms())
        self._origin = self.clock.now_ms()
        self.cue_count = 0
        self.last_cue = None
        self.acks_given = self.acks_missed = 0
        self._session = SessionTracker(start_ms=self._origin,
                                       wall_start_ms=None if self._wall_offset is None else self._origin + self._wall_offset)
        interpreter.start()
        self._observe()
        self.announce_state()
        self.process()
        self.poke()

    def pause(self) -> None:
        interpreter = self._require(RunState.RUNNING)
        now = self.clock.now_ms()  # one reading: play everything due, then freeze at that instant
        self.process(now)
        self._paused_at = self.routine_ms(now)
        self.motor.cut(self._paused_at)
        interpreter.pause()
        self._paused_since = now
        if self._session is not None:
            self._session.pauses += 1
        self.announce_state()
        self.poke()

    def resume(self) -> None:
        interpreter = self._require(RunState.PAUSED)
        if self._session is not None:
            self._session.paused_ms += self.clock.now_ms() - self._paused_since
        self._origin = self.clock.now_ms() - self._paused_at
        self._preview.cut(self.clock.now_ms())
        interpreter.resume()
        self.announce_state()
        self.poke()

    def skip(self, scope: SkipScope = SkipScope.ITERATION) -> None:
        """End the current iteration (next finger, hand or round) or, with ``SkipScope.STEP``, the whole step."""
        interpreter = self._require(RunState.RUNNING, RunState.PAUSED)
        now = self.clock.now_ms()
        self.process(now)
        t = self.routine_ms(now)
        was = interpreter.state
        interpreter.skip(t, scope)
        if self._session is not None:
            self._session.skips += 1
        self._observe()
        if interpreter.state == RunState.FINISHED and was == RunState.PAUSED:
            self._origin = self.clock.now_ms() - t  # the done cue plays now: a preview still playing stops
            self._preview.cut(now)
        if interpreter.state == RunState.FINISHED:
            self._end_session(Outcome.FINISHED)
        self.announce_state()
        self.poke()

    def stop(self) -> None:
        interpreter = self._require(RunState.RUNNING, RunState.PAUSED, RunState.FINISHED, RunState.IDLE)
        if interpreter.state in (RunState.RUNNING, RunState.PAUSED):
            self.process()
            interpreter.cancel_wait(self.routine_ms())
            self._end_session(Outcome.STOPPED)
        self.motor.cut(self.routine_ms())
        self._preview.cut(self.clock.now_ms())
        interpreter.reset()
        self.announce_state()
        self.poke()

    @property
    def ack_pending(self) -> bool:
        """Whether the band is waiting for the wearer to acknowledge a cue (and its routine time runs)."""
        return self.interpreter is not None and self.interpreter.state == RunState.RUNNING and self.interpreter.ack is not None

    def acknowledge(self) -> bool:
        """The wearer acknowledges the cue the band repeats; False (and nothing changes) when none waits."""
        interpreter = self.interpreter
        now = self.clock.now_ms()
        self.process(now)  # a repeat or the cap due now comes first
        if interpreter is None or not interpreter.acknowledge(self.routine_ms(now)):
            return False
        self._observe()
        if interpreter.state == RunState.FINISHED:
            self._end_session(Outcome.FINISHED)
        self.announce_state()  # from waiting to running, or to finished
        self.poke()
        return True

    def press(self, button: Button) -> None:
        """A button press on the band itself."""
        if self.interpreter is None:
            return
        self.process()  # a cap or a repeat due now comes first: the press then sees what the wearer felt
        state = self.interpreter.state
        if button == Button.PRESS and self.ack_pending:
            self.acknowledge()
        elif button == Button.LONG_PRESS and state in (RunState.RUNNING, RunState.PAUSED):
            self.skip()
        elif state == RunState.RUNNING:
            self.pause()
        elif state == RunState.PAUSED:
            self.resume()
        else:
            self.start()

    def preview(self, segments: list[tuple[int, int]], strength: int, kind: CueKind | None = None) -> None:
        """Play one pattern of (amplitude %, ms) segments now at ``strength`` % (PREVIEW, for calibration).

        The routine, its place and the stored strength stay as they are.  Refused
        while a routine runs (its cues own the motor); while paused, or after the
        end (cutting the done cue), the preview plays and START or RESUME cuts it.
        """
        check_strength(strength)
        if self.interpreter is not None and self.interpreter.state == RunState.RUNNING:
            raise band_error(Status.BAD_STATE, "a routine is running; pause or stop it before previewing a cue")
        now = self.clock.now_ms()
        self.process(now)
        self.motor.cut(self.routine_ms(now))
        self._preview.cut(now)
        self._preview_kind = kind
        self._preview.strength = strength
        # The motor reports through a Cue; the preview event names the kind itself (a pattern may have none).
        self._preview.play(Cue(now, kind or CueKind.TICK, NO_PATTERN, None, None, None), segments, now)
        self.poke()

    # ------------------------------------------------------------ settings

    @property
    def strength(self) -> int:
        """Cue strength, % (protocol.strength): every segment's amplitude is scaled by it from the next cue on."""
        return self.motor.strength

    def set_wall_clock(self, unix_ms: int) -> None:
        """The wall-clock time now (SET_TIME): later history records carry Unix times."""
        self._wall_offset = unix_ms - self.clock.now_ms()

    def set_strength(self, strength: int) -> None:
        """Store ``strength`` power-safe (ValueError outside 20..100 %) and play every later cue at it."""
        self.storage.settings.set_strength(strength)
        self.motor.strength = strength

    # ------------------------------------------------------------ history

    def note_ack(self, given: bool) -> None:
        """Count an acknowledgement for the session's history record: ``given`` when the wearer pressed
        the button while a cue that asks for one repeated, False when its repeats reached their cap
        (:meth:`~firmware_sim.history.SessionTracker.note_ack`).  Outside a session it counts nothing."""
        if self._session is not None:
            self._session.note_ack(given)

    def _observe(self) -> None:
        """Count the step iterations and records the session got past since the last look."""
        session, interpreter = self._session, self.interpreter
        if session is None or interpreter is None:
            return
        finished = interpreter.state == RunState.FINISHED
        position = None if finished or interpreter.step is None else (interpreter.pc, interpreter.step_iteration, interpreter.iteration_start)
        if position == session.position:
            return
        if session.position is not None:
            session.iterations += 1
            if position is None or position[1] == 0:
                session.steps += 1  # the last iteration of a record ended (or the session went past the record)
        session.position = position

    def _end_session(self, outcome: Outcome) -> None:
        """Write the session's history record (a flash that fails loses the record, never the session)."""
        session, interpreter = self._session, self.interpreter
        self._session = None
        if session is None or interpreter is None:
            return
        t = self.routine_ms()
        # As STATUS reports elapsed time: acknowledgement waits add to the routine's own total.
        played = interpreter.finished_at if outcome == Outcome.FINISHED else min(t, interpreter.total_ms + interpreter.waited_until(t))
        if interpreter.state == RunState.PAUSED:
            session = replace(session, paused_ms=session.paused_ms + self.clock.now_ms() - self._paused_since)
        active = self.storage.active
        if session.wall_start_ms is not None:
            clock, start = ClockKind.UNIX_MS, session.wall_start_ms
        elif self._wall_offset is not None:  # the clock was set during the session
            clock, start = ClockKind.UNIX_MS, session.start_ms + self._wall_offset
        else:
            clock, start = ClockKind.UPTIME_MS, session.start_ms
        try:
            self.storage.history.record(Session(
                clock=clock, outcome=outcome, start=start, played_ms=played, paused_ms=session.paused_ms,
                routine_crc32=active.crc if active else 0, pauses=session.pauses, skips=session.skips,
                steps=session.steps, iterations=session.iterations, routine_name=self.routine_name,
                acks_given=session.acks_given, acks_missed=session.acks_missed))
        except FlashError as exc:
            logger.warning("session not recorded: %s", exc)

    # ------------------------------------------------------------ status

    def status(self) -> StatusReport:
        """The session as the protocol reports it (SPEC.md §18.1).

        While the routine runs and an acknowledgement point waits for the wearer's press the
        state is WAITING and ``step_remaining_ms`` is the time until the band gives up (§12.10).
        """
        battery = round(self.battery_percent)
        interpreter = self.interpreter
        if interpreter is None:
            return StatusReport(BandState.IDLE, None, None, 0, None, None, 0, 0, 0, 0, None, 0, battery)
        t = self.routine_ms()
        hand, finger = interpreter.position()
        state = interpreter.state
        playing = state in (RunState.RUNNING, RunState.PAUSED) and interpreter.step is not None
        if state == RunState.IDLE:
            elapsed = 0
        elif state == RunState.FINISHED:
            elapsed = interpreter.finished_at  # routine time stops at the end (earlier after a skip)
        else:
            elapsed = min(t, interpreter.total_ms + interpreter.waited_until(t))
        waited = interpreter.waited_until(t)  # routine time in acknowledgement waits does not count against the routine
        waiting = state == RunState.RUNNING and interpreter.ack is not None
        # While waiting: the time the wearer has left to press.
        step_remaining = interpreter.ack_left_ms(t) if waiting else interpreter.step_remaining_ms(t) if playing else 0
        return StatusReport(
            state=BandState.WAITING if waiting else BandState[state.name],
            step=interpreter.pc if playing else None,
            technique=TechniqueCode(interpreter.step.technique) if playing and interpreter.step is not None else None,
            iteration=interpreter.step_iteration if playing else 0,
            hand=hand if playing else None,
            finger=finger if playing else None,
            elapsed_ms=elapsed,
            remaining_ms=max(0, interpreter.total_ms + waited - elapsed - interpreter.skipped_ms) if state != RunState.FINISHED else 0,
            step_remaining_ms=step_remaining,
            total_ms=interpreter.total_ms,
            last_cue=self.last_cue,
            cues=self.cue_count,
            battery=battery,
        )
