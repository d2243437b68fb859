"""What each cue kind is, beyond its code: the one place the companion's views read it from.

:class:`~protocol.constants.CueKind` holds the codes (and their priority:
the highest wins when cues coincide); :data:`CUES` says, per kind, what the
wearer is told it means, how a plot marks it and, for the cues a step record
carries, which record fields hold its pattern and timing.  The compiler, the
inspect text, the plot and the card iterate over these facts, so a new cue
kind is added here and not in each of them.

A step record's cue lives in a *slot*: ``slot`` names the routine's key (and
the attribute of ``companion.routine.StepCues``), the record holds its pattern
in ``{slot}_pattern`` and, for a timed cue, its timing in the field ``timing``
(the same name in the routine model and the record).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .constants import CueKind


class Fires(Enum):
    """When a step's cue in its slot fires (what the executors do; the views word it)."""

    AT_START = "at start"
    """When the step begins."""
    BETWEEN = "between"
    """Before each iteration but the first."""
    EVERY = "every"
    """Every ``timing`` ms into an iteration."""
    BEFORE_END = "before end"
    """``timing`` ms before an iteration ends."""


@dataclass(frozen=True)
class CueFacts:
    """One cue kind as the companion's views and compiler need it (its code and priority are the :class:`CueKind`)."""

    kind: CueKind
    wording: str
    """What the wearer is told it means (the card's priority note)."""
    legend: str
    """Its row in a plot."""
    marker: str
    """Its matplotlib marker (the plot outlines marks in white: a filled shape or a line such as ``|``)."""
    slot: str | None = None
    """The step-record cue slot that plays it; None for cues no step record carries."""
    fires: Fires | None = None
    """When the slot's cue fires."""
    timing: str | None = None
    """The field that times the slot's cue (:attr:`Fires.EVERY`, :attr:`Fires.BEFORE_END`)."""
    told: str = ""
    """When it fires, as the card tells it: a template of ``{timing}``, ``{each}`` (``each finger``) and ``{next}`` (``the next hand``)."""
    shown: str = ""
    """What ``handcue inspect`` adds after the slot's pattern: a template of ``{timing}``."""

    @property
    def pattern_field(self) -> str:
        """The step-record field that holds the slot's pattern."""
        return f"{self.slot}_pattern"


CUES: dict[CueKind, CueFacts] = {
    # In the order a step's cues are told: a step's own slots first.
    CueKind.START: CueFacts(CueKind.START, "step start", "step start", ">", slot="start", fires=Fires.AT_START,
                             told="when it begins"),
    CueKind.NEXT: CueFacts(CueKind.NEXT, "next finger or repeat", "next finger / repeat", "o", slot="next", fires=Fires.BETWEEN,
                            told="before {next}"),
    CueKind.TICK: CueFacts(CueKind.TICK, "tick", "tick", "|", slot="tick", fires=Fires.EVERY, timing="tick_every_ms",
                            told="every {timing} during {each}", shown=" every {timing}"),
    CueKind.WARN: CueFacts(CueKind.WARN, "warning", "warning", "v", slot="warn", fires=Fires.BEFORE_END, timing="warn_before_ms",
                            told="{timing} before the end of {each}", shown=" {timing} before the end"),
    CueKind.ROUND: CueFacts(CueKind.ROUND, "next round", "next round", "s"),
    CueKind.SWITCH: CueFacts(CueKind.SWITCH, "switch hands", "switch hands", "D"),
    CueKind.DONE: CueFacts(CueKind.DONE, "finish", "done", "*"),
}
"""The facts of every cue kind."""

STEP_CUE_SLOTS: tuple[CueFacts, ...] = tuple(facts for facts in CUES.values() if facts.slot)
"""The cues a step record carries, in the order a step's cues are told (start, next, tick, warn)."""

assert set(CUES) == set(CueKind), "every CueKind needs its facts in CUES"
