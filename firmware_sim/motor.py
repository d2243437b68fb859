"""The vibration motor driver: plays cue patterns, reports what the motor did.

A pattern is a list of (amplitude %, duration ms) segments; each on segment
plays at its amplitude scaled by the band's cue strength (:mod:`protocol.strength`),
fixed when the pattern starts.  Starting a new
pattern, pausing or stopping cuts the one playing short.  Each completed (or
cut) motor-on segment is reported as a :class:`~protocol.timeline.MotorEvent`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from protocol.strength import DEFAULT_STRENGTH, scaled_amplitude
from protocol.timeline import Cue, MotorEvent


@dataclass
class _Playing:
    cue: Cue
    segments: list[tuple[int, int]]
    index: int
    segment_start: int


class Motor:
    """Plays one pattern at a time on a routine-time axis."""

    def __init__(self, on_event: Callable[[MotorEvent], None], strength: int = DEFAULT_STRENGTH) -> None:
        self._on_event = on_event
        self.strength = strength
        self._playing: _Playing | None = None
        self.on_time_ms = 0

    @property
    def busy(self) -> bool:
        return self._playing is not None

    def play(self, cue: Cue, segments: list[tuple[int, int]], t_ms: int) -> None:
        self.cut(t_ms)
        scaled = [(scaled_amplitude(amplitude, self.strength), duration) for amplitude, duration in segments]
        self._playing = _Playing(cue, scaled, 0, t_ms)

    def cut(self, t_ms: int) -> None:
        """Stop at ``t_ms``; a motor-on segment in progress is reported up to then."""
        self.advance(t_ms)
        playing = self._playing
        if playing is not None:
            amplitude, _ = playing.segments[playing.index]
            if amplitude and t_ms > playing.segment_start:
                self._report(playing, amplitude, t_ms - playing.segment_start)
        self._playing = None

    def next_deadline(self) -> int | None:
        playing = self._playing
        return None if playing is None else playing.segment_start + playing.segments[playing.index][1]

    def advance(self, t_ms: int) -> None:
        """Finish every segment that ends at or before ``t_ms``."""
        while (playing := self._playing) is not None:
            amplitude, duration = playing.segments[playing.index]
            end = playing.segment_start + duration
            if end > t_ms:
                return
            if amplitude:
                self._report(playing, amplitude, duration)
            playing.index += 1
            playing.segment_start = end
            if playing.index == len(playing.segments):
                self._playing = None

    def _report(self, playing: _Playing, amplitude: int, duration: int) -> None:
        self.on_time_ms += duration
        self._on_event(MotorEvent.of(playing.cue, playing.segment_start, amplitude, duration))
