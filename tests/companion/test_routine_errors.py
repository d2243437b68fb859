"""Routine errors that find the typo (issue 12, point 5; issue 11, parts 3 and 7).

Each test writes a small routine and checks what the checker says about it:
the misspelt key is named, every error of a file comes out in one run, values
appear as they are written in TOML, and hostile input gets a clear error
instead of an internal one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from companion.cli import cli
from companion.routine import Block, Step, parse_duration, parse_routine


def errors_of(text: str) -> list[str]:
    routine, diagnostics = parse_routine(text, "r.toml")
    errors = [str(d) for d in diagnostics if d.severity == "error"]
    assert routine is None or not errors
    return errors


HEAD = 'name = "r"\nhands = "both"\n'


def test_misspelt_technique_key_is_named_even_though_technique_is_missing():
    errors = errors_of(HEAD + '[[steps]]\ntechique = "warm_up"\n')
    assert errors[0] == ("r.toml: steps[0] (step 1): unknown key 'techique' (did you mean 'technique'?); allowed: "
                         "technique, duration, for_each, repeat, start, next, tick, tick_every, halfway, warn, warn_before, ack, note")
    assert errors[1].startswith("r.toml: steps[0] (step 1).technique: missing")


def test_every_error_of_a_step_is_reported_in_one_run():
    errors = errors_of(HEAD + '[[steps]]\ntechnique = "palm_spread"\nfor_each = "toe"\nstart = "bzz"\ntick_every = "soon"\n')
    assert [e.split(": ")[1] for e in errors] == [
        "steps[0] (step 1, palm_spread).for_each",
        "steps[0] (step 1, palm_spread).start",
        "steps[0] (step 1, palm_spread).tick_every",
    ]


def test_a_block_with_a_bad_repeat_still_has_its_steps_checked():
    errors = errors_of(HEAD + '[[steps]]\nrepeat = 0\n[[steps.steps]]\ntechnique = "combing"\nduration = "soon"\n')
    assert errors[0].startswith("r.toml: steps[0].repeat: 0; allowed a whole number")
    assert errors[1].startswith('r.toml: steps[0].steps[0] (step 1, combing).duration: "soon" is not a duration')


@pytest.mark.parametrize(("head", "shown"), [
    ('name = "r"\nhands = ["left", "right"]\n', 'hands: ["left", "right"] is not a hand order'),
    ('name = "r"\nfinish = true\n', "finish: true is not a cue pattern"),
    ("name = 12.5\n", "name: 12.5 must be a non-empty string"),
])
def test_values_are_shown_as_written_in_toml(head: str, shown: str):
    errors = errors_of(head + '[[steps]]\ntechnique = "combing"\n')
    assert any(f"r.toml: {shown}" in e for e in errors), errors
    assert not any("True" in e or "['left'" in e for e in errors)


def test_missing_on_off_in_a_pattern_table_is_named_with_its_path():
    errors = errors_of(HEAD + '[patterns]\nsoft = { amplitude = 50 }\n[[steps]]\ntechnique = "combing"\n')
    assert errors == ['r.toml: patterns.soft.on_off: missing; a pattern table needs on_off = "80/120/80" (ms, starting with the motor on)']


@pytest.mark.parametrize(("text", "ms"), [
    ("1500 milliseconds", 1500), ("1 millisecond", 0), ("200 msecs", 200), ("2 hours", 7_200_000), ("1 hr 1 min", 3_660_000),
    ("3 minutes 2 seconds", 182_000), ("1 sec", 1000), ("1:02:30", 3_750_000), ("0:01:05", 65_000), ("1:30", 90_000),
])
def test_durations_accept_every_long_unit_name_and_h_mm_ss(text: str, ms: int):
    assert parse_duration(text) == ms


def test_a_finger_technique_inside_a_finger_block_plays_once_per_round():
    routine, diagnostics = parse_routine(HEAD + '[[steps]]\nfor_each = "finger"\n[[steps.steps]]\ntechnique = "key_grip"\n', "r.toml")
    assert routine is not None, diagnostics
    block = routine.steps[0]
    assert isinstance(block, Block) and block.count == 5
    step = block.steps[0]
    assert isinstance(step, Step) and step.count == 1
    assert routine.total_ms == 5 * 15_000


@pytest.mark.parametrize(("line", "message"), [
    ("duration = 1e306", "1e+306 is out of range"),
    ("duration = " + "9" * 400, "999999... (400 digits) is out of range"),
    ('duration = "' + "9" * 400 + ' s"', "is out of range"),
    ("repeat = " + "9" * 400, "repeat: 999999... (400 digits); allowed a whole number from 1 to 255"),
])
def test_out_of_range_numbers_get_a_clear_error(line: str, message: str):
    errors = errors_of(HEAD + f'[[steps]]\ntechnique = "combing"\n{line}\n')
    assert len(errors) == 1 and message in errors[0], errors


@pytest.mark.parametrize("content", [
    "x = " + "[" * 5000,
    'name = "r"\n' + "# padding\n" * 120_000,
    'name = "r"\n[[steps]]\ntechnique = "combing"\nduration = 1e306\n',
    'name = "r"\n[[steps]]\ntechnique = "combing"\nrepeat = ' + "9" * 400 + "\n",
])
def test_hostile_files_get_a_clear_error_not_an_internal_one(tmp_path: Path, content: str):
    path = tmp_path / "r.toml"
    path.write_text(content)
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 1, result.output
    assert "internal error" not in result.output
    assert f"{path}" in result.output


def test_deep_nesting_and_big_files_are_named_for_what_they_are(tmp_path: Path):
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000)
    big = tmp_path / "big.toml"
    big.write_text('name = "r"\n' + "#" * (1024 * 1024))
    runner = CliRunner()
    assert "nested too deeply" in runner.invoke(cli, ["check", str(deep)]).output
    assert "over 1 MiB" in runner.invoke(cli, ["check", str(big)]).output


@pytest.mark.parametrize(("technique", "cue"), [("warm_up", "tick"), ("joystick", "next")])
def test_tick_every_on_a_half_time_technique_repeats_its_cue(technique: str, cue: str):
    routine, diagnostics = parse_routine(HEAD + f'[[steps]]\ntechnique = "{technique}"\nduration = 60\ntick_every = 20\nwarn = false\n', "r.toml")
    assert routine is not None, diagnostics
    step = routine.steps[0]
    assert isinstance(step, Step)
    assert (step.cues.tick, step.cues.tick_every_ms) == (cue, 20_000)
