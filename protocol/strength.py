"""Cue strength: how a band's strength setting (20 to 100 %) scales every motor segment's amplitude.

One rule, shared by the simulator's motor, ``inspect --timeline --strength``
and the C reference (``hc_scaled_amplitude``), so the three agree byte for
byte (SPEC.md §19):

* an off segment (amplitude 0) stays off;
* an on segment of amplitude ``a`` plays at ``round(a * strength / 100)``
  (half up), but never below :data:`MIN_FELT_AMPLITUDE`: a weaker setting must
  not turn a cue into one the wearer cannot feel;
* a segment the routine itself wrote at or below that floor plays as written
  (the setting only ever weakens a cue, never strengthens it).
"""

from __future__ import annotations

MIN_STRENGTH = 20
MAX_STRENGTH = 100
DEFAULT_STRENGTH = MAX_STRENGTH
"""A band that never stored a setting plays patterns exactly as written."""
MIN_FELT_AMPLITUDE = 20
"""The weakest amplitude (%) a scaled segment plays at: below it an ERM or LRA on the wrist is not reliably felt."""


def check_strength(strength: int) -> int:
    """``strength`` if it is a valid setting; ValueError naming the range otherwise."""
    if not MIN_STRENGTH <= strength <= MAX_STRENGTH:
        raise ValueError(f"cue strength {strength} %: a band plays {MIN_STRENGTH} to {MAX_STRENGTH} %")
    return strength


def scaled_amplitude(amplitude: int, strength: int) -> int:
    """The amplitude (%) a segment written at ``amplitude`` plays at on a band set to ``strength`` %."""
    if amplitude <= MIN_FELT_AMPLITUDE:
        return amplitude
    return max(MIN_FELT_AMPLITUDE, (amplitude * strength + 50) // 100)
