"""``handcue check`` warns about cues a wearer may not tell apart: too many patterns, or patterns that differ only in strength."""

from __future__ import annotations

import subprocess
import sys

import pytest

from companion.routine import TOLD_APART_PATTERNS, load_routine, parse_routine

from ..conftest import SHIPPED

STEP = """
[[steps]]
technique = "warm_up"
duration = 60
for_each = "finger"
start = "{start}"
next = "{next}"
"""


def routine_text(patterns: dict[str, str], pairs: list[tuple[str, str]]) -> str:
    lines = ['name = "Cues"', 'finish = "done"', "[patterns]", *(f"{name} = {spec}" for name, spec in patterns.items())]
    return "\n".join(lines) + "".join(STEP.format(start=start, next=next_) for start, next_ in pairs)


def warnings_of(text: str, source: str = "cues.toml") -> list[str]:
    routine, diagnostics = parse_routine(text, source)
    assert routine is not None, [str(d) for d in diagnostics]
    return [str(w) for w in routine.warnings]


def test_more_patterns_than_people_tell_apart_is_warned_naming_them():
    customs = {"one": '"90/200/90"', "two": '"300/100/300"'}
    # start, next, done from the vocabulary, then tick, warn, switch, round, alert as step cues, then the two custom ones
    pairs = [("start", "next"), ("tick", "warn"), ("switch", "round"), ("alert", "one"), ("two", "next")]
    text = routine_text(customs, pairs)
    [warning] = warnings_of(text)
    assert warning.startswith("cues.toml: warning: patterns: the routine uses 10 different cue patterns")
    assert "(tick, start, next, warn, switch, round, done, alert, one, two)" in warning and "6 to 8" in warning
    assert TOLD_APART_PATTERNS == 8
    # eight in all is what the vocabulary itself holds: no warning
    assert warnings_of(routine_text({}, [*pairs[:3], ("alert", "next")])) == []


def test_patterns_with_the_same_rhythm_differing_only_in_strength_are_warned():
    customs = {"soft_next": '{ on_off = "80/120/80", amplitude = 40, meaning = "softly: next" }'}
    [warning] = warnings_of(routine_text(customs, [("start", "next"), ("start", "soft_next")]))
    assert warning.startswith("cues.toml: warning: patterns.soft_next: next at 100 %, soft_next at 40 % share the rhythm 80/120/80 ms")
    assert "differ only in strength" in warning


def test_a_custom_pattern_copying_a_vocabulary_rhythm_and_strength_is_warned_as_the_same_vibration():
    [warning] = warnings_of(routine_text({"again": '"80/120/80"'}, [("start", "next"), ("start", "again")]))
    assert "patterns.again: next, again are the same vibration (80/120/80 ms at 100 %)" in warning and "use one name" in warning


def test_identical_patterns_count_once_toward_the_told_apart_limit():
    customs = {"again": '"80/120/80"'}  # the same vibration as next: one cue on the band
    pairs = [("start", "next"), ("tick", "warn"), ("switch", "round"), ("alert", "again")]
    assert [w for w in warnings_of(routine_text(customs, pairs)) if "different cue patterns" in w] == []


def test_a_rhythm_of_its_own_at_another_strength_is_fine():
    customs = {"soft_long": '{ on_off = "200/150/200", amplitude = 40 }'}
    assert warnings_of(routine_text(customs, [("start", "next"), ("start", "soft_long")])) == []


@pytest.mark.parametrize("routine", SHIPPED)
def test_shipped_routines_keep_to_what_people_tell_apart(routine):
    loaded = load_routine(routine)
    assert len(loaded.patterns) <= TOLD_APART_PATTERNS
    assert not [w for w in loaded.warnings if w.where.startswith("patterns")]


def test_check_prints_the_warnings_and_still_passes(tmp_path):
    path = tmp_path / "soft.toml"
    path.write_text(routine_text({"soft_next": '{ on_off = "80/120/80", amplitude = 40 }'}, [("start", "next"), ("start", "soft_next")]))
    result = subprocess.run([sys.executable, "-c", "from companion.cli import main; main()", "check", str(path)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert f"{path}: warning: patterns.soft_next: next at 100 %, soft_next at 40 %" in result.stderr
