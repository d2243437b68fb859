"""The band: storage, interpreter, motor, button and battery around one clock.

:class:`Band` is synchronous and deterministic: everything happens in
:meth:`Band.process` at a time the caller gives.  :meth:`Band.run` is the async
main loop a simulator process uses: it waits on the injected clock for the next
deadline or for a wake-up from the protocol handler.

Routine time (what traces and status report) is band time minus the time spent
paused, measured from the start of the session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import Enum
from typing import Any

from protocol.constants import BandState, CueKind, Status, TechniqueCode
from protocol.errors import band_error
from protocol.messages import StatusReport
from protocol.timeline import Cue, MotorEvent

from .clock import Clock
from .interpreter import Interpreter, RunState
from .motor import Motor
from .storage import Storage

Listener = Callable[[dict[str, Any]], None]


class Button(Enum):
    """The band's one button: a press starts, pauses or resumes; a long press skips."""

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
        self.motor = Motor(self._motor_event)
        self.interpreter: Interpreter | None = None
        self._origin = 0
        self._paused_at = 0
        self.last_cue: CueKind | None = None
        self.cue_count = 0
        self.wake = asyncio.Event()
        self.reload()

    # ------------------------------------------------------------ events

    def _emit(self, event: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            listener(event)

    def _motor_event(self, event: MotorEvent) -> None:
        self.battery_percent = max(0.0, self.battery_percent - event.duration_ms * 1e-5)
        self._emit({"event": "motor", **event.to_json()})

    def _cue(self, cue: Cue) -> None:
        assert self.interpreter is not None
        self.last_cue = cue.kind
        self.cue_count += 1
        self.motor.play(cue, self.interpreter.pattern_segments(cue.pattern), cue.t_ms)
        self._emit({"event": "cue", "t_ms": cue.t_ms, "cue": cue.kind.name.lower(), "pattern": cue.pattern,
                    "step": cue.step, "hand": cue.hand, "finger": cue.finger})

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
        if self.interpreter is None:
            return
        was = self.interpreter.state
        t = self.routine_ms(now_ms)
        if was == RunState.RUNNING:
            self.interpreter.advance(t)
        if self.interpreter.state != RunState.PAUSED:
            self.motor.advance(t)
        if self.interpreter.state != was:
            self.announce_state()

    def next_deadline(self) -> int | None:
        """Band time of the next thing to do, or None when nothing is scheduled."""
        if self.interpreter is None or self.interpreter.state in (RunState.IDLE, RunState.PAUSED):
            return None
        due = [t for t in (self.interpreter.next_deadline(), self.motor.next_deadline()) if t is not None]
        return min(due) + self._origin if due else None

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
        self.interpreter = Interpreter(data, self._cue, verified=True) if data is not None else None

    def _require(self, *states: RunState) -> Interpreter:
        if self.interpreter is None:
            raise band_error(Status.NO_ROUTINE, "the band holds no routine; upload one first")
        if self.interpreter.state not in states:
            allowed = " or ".join(s.value for s in states)
            raise band_error(Status.BAD_STATE, f"the band is {self.interpreter.state.value}; this needs {allowed}")
        return self.interpreter

    def start(self) -> None:
        interpreter = self._require(RunState.IDLE, RunState.FINISHED, RunState.RUNNING, RunState.PAUSED)
        self.motor.cut(self.routine_ms())
        self._origin = self.clock.now_ms()
        self.cue_count = 0
        self.last_cue = None
        interpreter.start()
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
        self.announce_state()
        self.poke()

    def resume(self) -> None:
        interpreter = self._require(RunState.PAUSED)
        self._origin = self.clock.now_ms() - self._paused_at
        interpreter.resume()
        self.announce_state()
        self.poke()

    def skip(self) -> None:
        interpreter = self._require(RunState.RUNNING, RunState.PAUSED)
        now = self.clock.now_ms()
        self.process(now)
        t = self.routine_ms(now)
        was = interpreter.state
        interpreter.skip(t)
        if interpreter.state == RunState.FINISHED and was == RunState.PAUSED:
            self._origin = self.clock.now_ms() - t  # the done cue plays now
        self.announce_state()
        self.poke()

    def stop(self) -> None:
        interpreter = self._require(RunState.RUNNING, RunState.PAUSED, RunState.FINISHED, RunState.IDLE)
        self.motor.cut(self.routine_ms())
        interpreter.reset()
        self.announce_state()
        self.poke()

    def press(self, button: Button) -> None:
        """A button press on the band itself."""
        if self.interpreter is None:
            return
        state = self.interpreter.state
        if button == Button.LONG_PRESS and state in (RunState.RUNNING, RunState.PAUSED):
            self.skip()
        elif state == RunState.RUNNING:
            self.pause()
        elif state == RunState.PAUSED:
            self.resume()
        else:
            self.start()

    # ------------------------------------------------------------ status

    def status(self) -> StatusReport:
        """The session as the protocol reports it."""
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
            elapsed = min(t, interpreter.total_ms)
        return StatusReport(
            state=BandState[state.name],
            step=interpreter.pc if playing else None,
            technique=TechniqueCode(interpreter.step.technique) if playing and interpreter.step is not None else None,
            iteration=interpreter.step_iteration if playing else 0,
            hand=hand if playing else None,
            finger=finger if playing else None,
            elapsed_ms=elapsed,
            remaining_ms=max(0, interpreter.total_ms - elapsed - interpreter.skipped_ms) if state != RunState.FINISHED else 0,
            step_remaining_ms=max(0, interpreter.iteration_end - t) if playing else 0,
            total_ms=interpreter.total_ms,
            last_cue=self.last_cue,
            cues=self.cue_count,
            battery=battery,
        )
