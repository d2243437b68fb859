"""The built-in technique library and the default cue vocabulary.

Source: the hand-massage article summarised in ``shared/techniques.md``.  A
technique gives a step its defaults (duration, repetition, cues); a routine
file may override every one of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.constants import TechniqueCode
from protocol.table import CuePattern, PatternSegment

FULL = 100
"""Default amplitude (percent) of the built-in cues."""


def parse_on_off(notation: str, amplitude: int = FULL, name: str = "") -> CuePattern:
    """``"80/120/80"`` -> on 80 ms, off 120 ms, on 80 ms (alternating, starting on)."""
    parts = [part.strip() for part in notation.split("/")]
    durations = [int(part) for part in parts]  # ValueError for the caller to report
    segments = tuple(PatternSegment(amplitude if i % 2 == 0 else 0, ms) for i, ms in enumerate(durations))
    return CuePattern(segments, name)


@dataclass(frozen=True)
class Cue:
    """A named cue of the default vocabulary and what it means."""

    name: str
    on_off: str
    meaning: str

    @property
    def pattern(self) -> CuePattern:
        return parse_on_off(self.on_off, FULL, self.name)


CUE_VOCABULARY: dict[str, Cue] = {
    cue.name: cue
    for cue in (
        Cue("tick", "50", 'periodic "keep going"'),
        Cue("start", "80", "a step begins"),
        Cue("next", "80/120/80", "next finger / next part"),
        Cue("warn", "60/100/60/100/60", "a few seconds left in this step"),
        Cue("switch", "300/150/80", "switch hands"),
        # The article's 50/70/... rhythm breaks the 100 ms minimum gap of the same
        # vocabulary (gaps under 100 ms blur); the gaps are widened to 100 ms.
        Cue("round", "50/100/50/100/50/100/50", "a repeat round begins"),
        Cue("done", "400/200/400", "routine finished"),
        Cue("alert", "750", "attention: the band needs the companion"),
    )
}


@dataclass(frozen=True)
class StepDefaults:
    """What a step of a technique does unless the routine says otherwise."""

    duration_s: float
    for_each: str | None = None
    start: str | None = "start"
    next: str | None = "next"
    tick: str | None = None
    tick_every_s: float = 0
    halfway: str | None = None
    warn: str | None = None
    warn_before_s: float = 0


@dataclass(frozen=True)
class Technique:
    """One entry of the technique library."""

    id: str
    name: str
    how: str
    default_time: str
    cue_notes: str
    defaults: StepDefaults
    acupressure: bool = False
    tags: tuple[str, ...] = field(default=())

    @property
    def code(self) -> TechniqueCode:
        return TechniqueCode.from_text_id(self.id)


_ACUPRESSURE_DEFAULTS = StepDefaults(300, for_each="hand", next="switch", tick="tick", tick_every_s=30, warn="warn", warn_before_s=10)

TECHNIQUES: dict[str, Technique] = {
    t.id: t
    for t in (
        Technique(
            "warm_up", "Warming up",
            "Hold the hand between both palms and rub, slowly then faster, like spinning a stick to light a fire. Always first.",
            "30-60 s", 'start cue; a "faster now" cue at half time',
            StepDefaults(45, halfway="tick"),
        ),
        Technique(
            "joystick", "Thumb kneading (joystick)",
            "Hold the hand like a game controller and knead with both thumbs: firmer on the palm, gentle on the back.",
            "60-120 s per hand", "next-part cue at half time (palm/back)",
            StepDefaults(90, halfway="next", warn="warn", warn_before_s=10),
        ),
        Technique(
            "acupressure", "Acupressure on one point",
            "Quick, intense, concentrated circular pressure on one point; it softens under pressure when found. Do not overdo it.",
            "5-15 min; hard cap 15 min per point", 'start cue, periodic "keep going" cues, warning before the end',
            _ACUPRESSURE_DEFAULTS, acupressure=True,
        ),
        Technique(
            "acupressure:PC6", "Pericardium 6 (Neiguan)",
            "About 5 cm above the middle of the inner wrist crease. Eases nausea, motion sickness, nausea in pregnancy.",
            "5-15 min per wrist", "left and right wrist as separate steps",
            _ACUPRESSURE_DEFAULTS, acupressure=True,
        ),
        Technique(
            "acupressure:LI4", "Hegu (LI4)",
            "Grip the web between thumb and forefinger and press. Eases toothache, headache, dizziness, cramps.",
            "5-15 min per hand", "left and right hand",
            _ACUPRESSURE_DEFAULTS, acupressure=True,
        ),
        Technique(
            "flex_extend", "Flexion and extension",
            "Support hand and wrist; tilt the fingers forward, hold, tilt back, hold; then each finger alone, extra care for the thumb.",
            "60 s + 10 s per finger", 'a cue per finger; "hold"/"release" ticks',
            StepDefaults(10, for_each="finger", tick="tick", tick_every_s=5),
        ),
        Technique(
            "finger_squeeze", "Squeezing each finger",
            "Grasp each finger as if squeezing a small ball and compress, pull, press.",
            "15-20 s per finger", "a cue per finger, a different cue for the next hand",
            StepDefaults(15, for_each="finger"),
        ),
        Technique(
            "key_grip", "Key grip",
            "Squeeze the finger as if holding a key, rotate the thumb around and along the whole finger; stretch each finger.",
            "15 s per finger", "a cue per finger",
            StepDefaults(15, for_each="finger"),
        ),
        Technique(
            "doorknob", "Doorknob twist",
            "Gently pull each finger from the knuckle and turn it like a doorknob, with light pressure.",
            "10 s per finger", "a cue per finger",
            StepDefaults(10, for_each="finger"),
        ),
        Technique(
            "handshake", "Handshake",
            "Shake hands, grasp with the other hand too; long strokes over the thumb mound and finger bones, then knead the palm.",
            "60-90 s per hand", "start cue",
            StepDefaults(75, warn="warn", warn_before_s=10),
        ),
        Technique(
            "palm_spread", "Spreading the palm",
            "Interlock so your hands open and stretch the partner's palm; alternate with kneading the thumb mound. Very deep stretch: be careful.",
            "45-60 s per hand", '"stretch"/"knead" alternation ticks',
            StepDefaults(45, tick="tick", tick_every_s=15),
        ),
        Technique(
            "combing", "Combing (finish)",
            "From the wrist, stroke the hand with long, slow, light movements; do not rush. Always last.",
            "30-60 s", "finish cue at the end of the routine",
            StepDefaults(45),
        ),
    )
}

assert set(TECHNIQUES) == {code.text_id for code in TechniqueCode}
