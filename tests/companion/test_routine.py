"""Routine files: loading, every error and warning, compilation shape, durations."""

from __future__ import annotations

from pathlib import Path

import pytest

from companion import build_table, compile_routine, load_routine, parse_routine, read_table, shipped_routines
from companion.errors import HandCueError, RoutineError
from companion.routine import check_routine, parse_duration, resolve_routine
from companion.techniques import CUE_VOCABULARY
from protocol.constants import Hands, Iterate, TechniqueCode
from protocol.table import LoopRecord, StepRecord, pattern_problem

SHIPPED_IDS = ["desk-break", "full-hand-massage", "headache-li4", "nausea-pc6"]
SHIPPED_NAMES = {
    "desk-break": "Desk break",
    "full-hand-massage": "Full hand massage",
    "headache-li4": "Headache relief (LI4)",
    "nausea-pc6": "Nausea relief (PC6)",
}


def write(tmp_path: Path, text: str, name: str = "routine.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(RoutineError) as info:
        load_routine(path)
    return str(info.value)


def diagnostics(text: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) of routine text, each as its one-line message."""
    _, found = parse_routine(text, "r.toml")
    return [str(d) for d in found if d.severity == "error"], [str(d) for d in found if d.severity == "warning"]


def errors_of(text: str) -> list[str]:
    errors, _ = diagnostics(text)
    assert errors, "expected at least one error"
    return errors


def one_step(body: str, *, hands: str = "both", head: str = "") -> str:
    return f'name = "t"\nhands = "{hands}"\n{head}\n[[steps]]\n{body}\n'


# --------------------------------------------------------------------------
# Shipped routines


def test_shipped_routine_ids():
    assert sorted(shipped_routines()) == SHIPPED_IDS


@pytest.mark.parametrize("routine_id", SHIPPED_IDS)
def test_load_shipped_routine_by_id(routine_id):
    routine = load_routine(routine_id)
    assert routine.id == routine_id
    assert routine.name == SHIPPED_NAMES[routine_id]
    assert routine.source == routine_id
    assert routine.hands == Hands.LEFT_THEN_RIGHT
    assert routine.finish == "done"
    assert routine.warnings == []


@pytest.mark.parametrize("routine_id", SHIPPED_IDS)
def test_load_shipped_routine_by_path(routine_id):
    path = shipped_routines()[routine_id]
    assert path.name == f"{routine_id}.toml" and path.is_file()
    assert resolve_routine(routine_id) == path
    by_path = load_routine(path)
    assert by_path.source == str(path)
    assert by_path.id == routine_id
    assert compile_routine(by_path) == compile_routine(load_routine(routine_id))
    assert compile_routine(load_routine(str(path))) == compile_routine(by_path)


def test_shipped_routine_totals():
    assert load_routine("nausea-pc6").total_ms == 600_000
    assert load_routine("headache-li4").total_ms == 600_000
    assert load_routine("desk-break").total_ms == 2 * (20 + 5 * 8 + 5 * 10 + 25 + 20) * 1000 == 310_000
    assert load_routine("full-hand-massage").total_ms == 1_110_000


def test_unknown_routine_reference_is_an_error_with_a_hint():
    with pytest.raises(RoutineError) as info:
        load_routine("nausea-pc7")
    message = str(info.value)
    assert "nausea-pc7: no such file or shipped routine" in message
    assert "did you mean 'nausea-pc6'?" in message
    assert isinstance(info.value, HandCueError)


# --------------------------------------------------------------------------
# Syntax and semantic error messages


def test_toml_syntax_error_names_file_line_and_column(tmp_path):
    message = load_error(tmp_path, 'name = "x"\nhands = "both"\nfinish = done\n')
    path = tmp_path / "routine.toml"
    assert message.startswith(f"{path}:3:10: ")
    assert "TOML syntax error" in message


def test_toml_syntax_error_on_a_later_line(tmp_path):
    message = load_error(tmp_path, 'name = "x"\n\n[[steps]\ntechnique = "warm_up"\n')
    assert f"{tmp_path / 'routine.toml'}:3:" in message
    assert "TOML syntax error" in message


def test_pc6_over_15_minutes_names_file_step_technique_and_field(tmp_path):
    message = load_error(tmp_path, one_step('technique = "acupressure:PC6"\nduration = "20 min"'))
    lines = message.splitlines()
    assert len(lines) == 2  # one per hand
    for line, hand in zip(lines, ("left", "right"), strict=True):
        assert line.startswith(f"{tmp_path / 'routine.toml'}: steps[0] (step 1, acupressure:PC6).duration: ")
        assert "20 min" in line and "15 min" in line
        assert f"on the {hand} side" in line


def test_every_error_is_reported_not_just_the_first(tmp_path):
    message = load_error(tmp_path, 'name = "t"\n[[steps]]\ntechnique = "warm_upp"\n[[steps]]\ntechnique = "combing"\nduration = "soon"\n')
    assert len(message.splitlines()) == 2
    assert "steps[0] (step 1).technique: \"warm_upp\" is not in the library (did you mean 'warm_up'?)" in message
    assert "steps[1] (step 2, combing).duration: \"soon\" is not a duration" in message


def test_missing_name_and_steps():
    errors = errors_of('hands = "both"\n')
    assert "r.toml: name: missing" in errors
    assert "r.toml: steps: a routine needs at least one [[steps]] table" in errors


def test_step_without_technique():
    errors = errors_of(one_step('duration = 5'))
    assert errors == ["r.toml: steps[0] (step 1).technique: missing; every step names a technique (or holds steps = [...] as a block)"]


def test_bad_hands_value():
    errors = errors_of(one_step('technique = "warm_up"', hands="both-ways"))
    assert errors[0].startswith("r.toml: hands: \"both-ways\" is not a hand order")


# --------------------------------------------------------------------------
# Unknown keys: errors with a did-you-mean hint


def test_unknown_routine_key():
    errors = errors_of('nmae = "x"\nname = "x"\n[[steps]]\ntechnique = "warm_up"\n')
    assert errors == ["r.toml: unknown key 'nmae' (did you mean 'name'?); allowed: id, name, description, hands, finish, finish_ack, patterns, steps"]


def test_unknown_step_key():
    errors = errors_of(one_step('technique = "warm_up"\ndurration = 30'))
    assert len(errors) == 1
    assert errors[0].startswith("r.toml: steps[0] (step 1, warm_up): unknown key 'durration' (did you mean 'duration'?); allowed: technique, duration")


def test_unknown_block_key():
    errors = errors_of('name = "t"\n[[steps]]\nfor_each = "hand"\nrepeats = 2\n[[steps.steps]]\ntechnique = "warm_up"\n')
    assert len(errors) == 1
    assert errors[0].startswith("r.toml: steps[0]: unknown key 'repeats' (did you mean 'repeat'?); allowed: steps, for_each, repeat, next, note")


def test_unknown_nested_step_key():
    errors = errors_of('name = "t"\n[[steps]]\nfor_each = "hand"\n[[steps.steps]]\ntechnique = "combing"\nnotes = "x"\n')
    assert errors[0].startswith("r.toml: steps[0].steps[0] (step 1, combing): unknown key 'notes' (did you mean 'note'?)")


def test_unknown_pattern_key():
    errors = errors_of(one_step('technique = "warm_up"\nstart = "soft"', head='[patterns]\nsoft = { on_off = "80", amplitde = 50 }'))
    assert errors == ["r.toml: patterns.soft: unknown key 'amplitde' (did you mean 'amplitude'?); allowed: on_off, amplitude, meaning"]


def test_unknown_technique_has_a_hint():
    errors = errors_of(one_step('technique = "acupressure:pc6"'))
    assert errors[0].startswith("r.toml: steps[0] (step 1).technique: \"acupressure:pc6\" is not in the library (did you mean 'acupressure:PC6'?)")


# --------------------------------------------------------------------------
# Bad values


@pytest.mark.parametrize("value", ['"5 parsecs"', '"abc"', '""', '"5 min later"', '"1:75"', "-1", "true", "[30]"])
def test_bad_duration_is_an_error(value):
    errors = errors_of(one_step(f'technique = "combing"\nduration = {value}'))
    assert len(errors) == 1
    assert errors[0].startswith("r.toml: steps[0] (step 1, combing).duration: ")


@pytest.mark.parametrize("value, shown", [('"0.5 s"', "0.5 s"), ("0", "0 s"), ('"110 min"', "110 min")])
def test_duration_outside_the_step_range(value, shown):
    errors = errors_of(one_step(f'technique = "combing"\nduration = {value}'))
    assert errors == [f"r.toml: steps[0] (step 1, combing).duration: {shown}; a step lasts 1 s to 109 min 13.5 s"]


def test_duration_at_the_step_range_limits_is_accepted():
    for value in ('"1 s"', '"109 min 13.5 s"'):
        errors, _ = diagnostics(one_step(f'technique = "combing"\nduration = {value}'))
        assert errors == []


@pytest.mark.parametrize("field", ["tick_every", "warn_before"])
def test_bad_cue_timing_is_an_error(field):
    errors = errors_of(one_step(f'technique = "palm_spread"\nwarn = "warn"\n{field} = "later"'))
    assert errors[0].startswith(f"r.toml: steps[0] (step 1, palm_spread).{field}: \"later\" is not a duration")


def test_tick_every_under_one_second():
    errors = errors_of(one_step('technique = "palm_spread"\ntick_every = "0.5 s"'))
    assert errors == ["r.toml: steps[0] (step 1, palm_spread).tick_every: 0.5 s; at least 1 s between ticks"]


def test_warn_before_not_shorter_than_the_step():
    errors = errors_of(one_step('technique = "handshake"\nduration = "10 s"'))
    assert errors == ["r.toml: steps[0] (step 1, handshake).warn_before: 10 s is not shorter than the step (10 s)"]


@pytest.mark.parametrize("value", ['"toe"', '"hands"', "3", "true"])
def test_bad_for_each_is_an_error(value):
    errors = errors_of(one_step(f'technique = "combing"\nfor_each = {value}'))
    assert len(errors) == 1
    assert errors[0].startswith("r.toml: steps[0] (step 1, combing).for_each: ")
    assert 'allowed: "finger", "hand" or "none"' in errors[0]


def test_for_each_inside_a_block_doing_the_same():
    errors = errors_of('name = "t"\n[[steps]]\nfor_each = "finger"\n[[steps.steps]]\ntechnique = "doorknob"\nfor_each = "finger"\n')
    assert errors == ['r.toml: steps[0].steps[0] (step 1, doorknob).for_each: already inside a block that goes finger by finger']


def test_for_each_hand_on_a_one_hand_routine_is_an_error():
    errors = errors_of(one_step('technique = "combing"\nfor_each = "hand"', hands="left"))
    assert errors == ['r.toml: steps[0] (step 1, combing).for_each: "hand", but the routine treats only the left hand (set hands = "both")']


def test_block_for_each_hand_on_a_one_hand_routine_is_an_error():
    errors = errors_of('name = "t"\nhands = "left"\n[[steps]]\nfor_each = "hand"\n[[steps.steps]]\ntechnique = "combing"\n')
    assert errors == ['r.toml: steps[0].for_each: "hand", but the routine treats only the left hand (set hands = "both")']


def test_acupressure_in_one_hand_routine_plays_once_but_explicit_for_each_hand_is_an_error():
    routine, found = parse_routine(one_step('technique = "acupressure:LI4"', hands="right"), "r.toml")
    assert routine is not None, [str(d) for d in found]
    assert routine.steps[0].count == 1
    errors = errors_of(one_step('technique = "acupressure:LI4"\nfor_each = "hand"', hands="right"))
    assert errors == ['r.toml: steps[0] (step 1, acupressure:LI4).for_each: "hand", but the routine treats only the right hand (set hands = "both")']


@pytest.mark.parametrize("value", ["0", "256", '"2"', "true", "2.5", "-1"])
def test_repeat_out_of_range_is_an_error(value):
    errors = errors_of(one_step(f'technique = "combing"\nrepeat = {value}'))
    assert len(errors) == 1
    assert errors[0].startswith("r.toml: steps[0] (step 1, combing).repeat: ")
    assert "allowed a whole number from 1 to 255" in errors[0]


def test_repeat_limits_are_accepted():
    for value in (1, 255):
        errors, _ = diagnostics(one_step(f'technique = "combing"\nrepeat = {value}'))
        assert errors == []


def test_repeat_with_for_each_is_an_error():
    errors = errors_of(one_step('technique = "combing"\nfor_each = "finger"\nrepeat = 2'))
    assert errors == ["r.toml: steps[0] (step 1, combing).repeat: cannot be combined with for_each; nest a block instead"]


def test_block_repeat_out_of_range_is_an_error():
    errors = errors_of('name = "t"\n[[steps]]\nrepeat = 300\n[[steps.steps]]\ntechnique = "doorknob"\n')
    assert errors == ["r.toml: steps[0].repeat: 300; allowed a whole number from 1 to 255"]


def test_empty_block_is_an_error():
    errors = errors_of('name = "t"\nsteps = [{ for_each = "hand", steps = [] }]\n')
    assert errors == ["r.toml: steps[0].steps: a block needs at least one step"]


@pytest.mark.parametrize("field", ["start", "next", "tick", "warn", "halfway"])
def test_unknown_cue_pattern_name_is_an_error(field):
    errors = errors_of(one_step(f'technique = "combing"\n{field} = "buzz"'))
    assert len(errors) == 1
    assert errors[0].startswith(f"r.toml: steps[0] (step 1, combing).{field}: \"buzz\" is not a cue pattern")
    assert "allowed: tick, start, next, warn, switch, round, done, alert or false" in errors[0]


def test_unknown_cue_pattern_has_a_hint():
    errors = errors_of(one_step('technique = "combing"\nstart = "strat"'))
    assert "\"strat\" is not a cue pattern (did you mean 'start'?)" in errors[0]


def test_unknown_finish_and_block_next_pattern():
    errors = errors_of('name = "t"\nfinish = "dne"\n[[steps]]\nfor_each = "hand"\nnext = "swtch"\n[[steps.steps]]\ntechnique = "combing"\n')
    assert errors[0].startswith("r.toml: finish: \"dne\" is not a cue pattern (did you mean 'done'?)")
    assert errors[1].startswith("r.toml: steps[0].next: \"swtch\" is not a cue pattern (did you mean 'switch'?)")


@pytest.mark.parametrize(
    "spec, problem",
    [
        ('"20"', "pulse of 20 ms is too short to feel (at least 30 ms)"),
        ('"80/50/80"', "gap of 50 ms blurs two pulses into one (at least 100 ms)"),
        ('"50/100/50/100/50/100/50/100/50"', "9 segments; a cue has 1 to 8"),
        ('"600/100/500"', "lasts 1200 ms; a cue lasts at most 1000 ms"),
        ('"80/120"', "must start and end with the motor on"),
        ('"80/120/80/120"', "must start and end with the motor on"),
        ('"85"', "segment of 85 ms; segments are 10 ms steps from 10 to 2550 ms"),
        ('"abc"', "\"abc\" is not on/off milliseconds separated by '/' (e.g. \"80/120/80\")"),
        ("80", '80 is not an on/off string such as "80/120/80" (ms, starting with the motor on)'),
        ('{ on_off = "80", amplitude = 101 }', None),
        ('{ on_off = "80", amplitude = 0 }', None),
    ],
)
def test_custom_pattern_violating_limits_is_an_error(spec, problem):
    errors = errors_of(one_step('technique = "combing"\nstart = "mine"', head=f"[patterns]\nmine = {spec}"))
    if problem is None:
        assert errors[0].startswith("r.toml: patterns.mine.amplitude: ")
        assert "allowed 1 to 100 (percent)" in errors[0]
    else:
        assert errors[0] == f"r.toml: patterns.mine: {problem}"


def test_custom_patterns_at_the_limits_are_accepted():
    head = ('[patterns]\nshort = "30"\ngap = "30/100/30"\nlong = "400/200/400"\nseven = "30/100/30/100/30/100/30"\n'
            'soft = { on_off = "80", amplitude = 1 }\nloud = { on_off = "80", amplitude = 100, meaning = "x" }')
    text = (
        f'name = "t"\nhands = "left"\nfinish = "long"\n{head}\n'
        '[[steps]]\ntechnique = "palm_spread"\nstart = "short"\ntick = "gap"\n'
        '[[steps]]\ntechnique = "combing"\nstart = "seven"\n'
        '[[steps]]\ntechnique = "combing"\nstart = "soft"\n'
        '[[steps]]\ntechnique = "combing"\nstart = "loud"\n'
    )
    table = build_table(load_routine_text(text))
    assert [(p.name, p.describe()) for p in table.patterns] == [
        ("short", "30"), ("gap", "30/100/30"), ("seven", "30/100/30/100/30/100/30"), ("soft", "80"), ("loud", "80"), ("long", "400/200/400"),
    ]
    assert [s.amplitude for s in table.patterns[3].segments] == [1]
    assert table.pattern_label(table.done_pattern) == "long"
    assert read_table(compile_routine(load_routine_text(text))) == table


def test_custom_pattern_can_override_a_vocabulary_name():
    routine = parse_routine(one_step('technique = "combing"', head='[patterns]\nstart = { on_off = "200", amplitude = 60 }'), "r.toml")[0]
    table = build_table(routine)
    start = table.patterns[table.records[0].start_pattern]
    assert [(s.amplitude, s.duration_ms) for s in start.segments] == [(60, 200)]


# --------------------------------------------------------------------------
# Safety rules (shared/techniques.md)


def test_acupressure_exactly_15_minutes_per_point_is_accepted():
    errors, warnings = diagnostics(one_step('technique = "acupressure:PC6"\nduration = "15 min"'))
    assert errors == [] and warnings == []


def test_acupressure_just_over_15_minutes_is_an_error():
    errors = errors_of(one_step('technique = "acupressure:PC6"\nduration = "15 min 0.1 s"'))
    assert errors == [
        "r.toml: steps[0] (step 1, acupressure:PC6).duration: 15 min 0.1 s of acupressure on the left side exceeds the 15 min limit per point",
        "r.toml: steps[0] (step 1, acupressure:PC6).duration: 15 min 0.1 s of acupressure on the right side exceeds the 15 min limit per point",
    ]


def test_acupressure_accumulates_over_two_steps():
    text = 'name = "t"\n[[steps]]\ntechnique = "acupressure:PC6"\nduration = "8 min"\n[[steps]]\ntechnique = "acupressure:PC6"\nduration = "8 min"\n'
    errors = errors_of(text)
    assert len(errors) == 2
    assert all(e.startswith("r.toml: steps[1] (step 2, acupressure:PC6).duration: 16 min of acupressure") for e in errors)
    assert all("15 min" in e for e in errors)


def test_acupressure_on_different_points_does_not_accumulate():
    text = 'name = "t"\n[[steps]]\ntechnique = "acupressure:PC6"\nduration = "8 min"\n[[steps]]\ntechnique = "acupressure:LI4"\nduration = "8 min"\n'
    errors, warnings = diagnostics(text)
    assert errors == [] and warnings == []


def test_acupressure_accumulates_over_a_repeated_block():
    text = 'name = "t"\n[[steps]]\nrepeat = 2\nnext = "next"\n[[steps.steps]]\ntechnique = "acupressure:LI4"\nduration = "8 min"\n'
    errors = errors_of(text)
    assert errors == [
        "r.toml: steps[0].steps[0] (step 1, acupressure:LI4).duration: 16 min of acupressure on the left side exceeds the 15 min limit per point",
        "r.toml: steps[0].steps[0] (step 1, acupressure:LI4).duration: 16 min of acupressure on the right side exceeds the 15 min limit per point",
    ]


def test_acupressure_accumulates_over_step_repeat_on_one_hand():
    errors = errors_of(one_step('technique = "acupressure"\nfor_each = "none"\nrepeat = 3\nduration = "5 min 0.1 s"', hands="left"))
    assert errors == ["r.toml: steps[0] (step 1, acupressure).duration: 15 min 0.3 s of acupressure on the left side exceeds the 15 min limit per point"]


def test_acupressure_per_hand_block_counts_each_hand_once():
    text = 'name = "t"\n[[steps]]\nfor_each = "hand"\n[[steps.steps]]\ntechnique = "acupressure:PC6"\nfor_each = "none"\nduration = "15 min"\n'
    errors, warnings = diagnostics(text)
    assert errors == [] and warnings == []


def test_acupressure_inside_a_hand_block_defaults_to_once_per_hand():
    text = 'name = "t"\n[[steps]]\nfor_each = "hand"\n[[steps.steps]]\ntechnique = "acupressure:LI4"\n'
    table = build_table(load_routine_text(text))
    assert [(type(r).__name__, r.iterate, r.count) for r in table.records] == [("LoopRecord", Iterate.HAND, 2), ("StepRecord", Iterate.NONE, 1)]
    assert table.total_ms == 2 * 300_000


def test_acupressure_inside_a_hand_block_still_accumulates_per_hand():
    text = 'name = "t"\n[[steps]]\nfor_each = "hand"\n[[steps.steps]]\ntechnique = "acupressure:LI4"\nrepeat = 2\nduration = "8 min"\n'
    errors = errors_of(text)
    assert errors == [
        "r.toml: steps[0].steps[0] (step 1, acupressure:LI4).duration: 16 min of acupressure on the left side exceeds the 15 min limit per point",
        "r.toml: steps[0].steps[0] (step 1, acupressure:LI4).duration: 16 min of acupressure on the right side exceeds the 15 min limit per point",
    ]


def test_acupressure_under_5_minutes_is_a_warning():
    routine, found = parse_routine(one_step('technique = "acupressure:PC6"\nduration = "4 min 59.9 s"'), "r.toml")
    assert routine is not None
    assert [str(w) for w in routine.warnings] == [
        "r.toml: warning: steps[0] (step 1, acupressure:PC6).duration: 4 min 59.9 s of acupressure on the left side is under the 5 min the article recommends",
        "r.toml: warning: steps[0] (step 1, acupressure:PC6).duration: 4 min 59.9 s of acupressure on the right side is under the 5 min the article recommends",
    ]
    assert [d.severity for d in found] == ["warning", "warning"]


def test_acupressure_of_exactly_5_minutes_has_no_warning():
    _, warnings = diagnostics(one_step('technique = "acupressure:PC6"\nduration = "5 min"'))
    assert warnings == []


def test_routine_over_60_minutes_is_a_warning():
    routine, _ = parse_routine(one_step('technique = "combing"\nduration = "60 min 0.1 s"'), "r.toml")
    assert routine is not None
    assert [str(w) for w in routine.warnings] == ["r.toml: warning: routine lasts 60 min 0.1 s; over 60 min, the article warns against overdoing it"]


def test_routine_of_exactly_60_minutes_has_no_warning():
    routine, _ = parse_routine(one_step('technique = "combing"\nrepeat = 4\nduration = "15 min"'), "r.toml")
    assert routine is not None and routine.total_ms == 3_600_000
    assert routine.warnings == []


def test_warnings_do_not_stop_loading(tmp_path):
    routine = load_routine(write(tmp_path, one_step('technique = "acupressure:LI4"\nduration = "3 min"')))
    assert len(routine.warnings) == 2
    assert compile_routine(routine)


# --------------------------------------------------------------------------
# Compilation shape


def test_block_repeat_stays_a_loop_record():
    text = 'name = "t"\nhands = "left"\n[[steps]]\nrepeat = 3\nnext = "next"\n[[steps.steps]]\ntechnique = "doorknob"\n[[steps.steps]]\ntechnique = "key_grip"\n'
    table = build_table(load_routine_text(text))
    assert len(table.records) == 3  # 2 steps + 1 block: not unrolled
    loop = table.records[0]
    assert isinstance(loop, LoopRecord)
    assert (loop.iterate, loop.count, loop.body_count) == (Iterate.NONE, 3, 2)
    assert table.total_ms == 3 * (50_000 + 75_000)


def test_nested_blocks_are_loop_records_with_their_bodies():
    text = (
        'name = "t"\n[[steps]]\nfor_each = "hand"\n'
        '[[steps.steps]]\ntechnique = "warm_up"\n'
        '[[steps.steps]]\nfor_each = "finger"\n[[steps.steps.steps]]\ntechnique = "combing"\nduration = 5\n'
        '[[steps.steps.steps]]\ntechnique = "handshake"\nduration = 20\n'
        '[[steps.steps]]\ntechnique = "combing"\n'
    )
    table = build_table(load_routine_text(text))
    shape = [(type(r).__name__, r.iterate, r.count, getattr(r, "body_count", None)) for r in table.records]
    assert shape == [
        ("LoopRecord", Iterate.HAND, 2, 5),
        ("StepRecord", Iterate.NONE, 1, None),
        ("LoopRecord", Iterate.FINGER, 5, 2),
        ("StepRecord", Iterate.NONE, 1, None),
        ("StepRecord", Iterate.NONE, 1, None),
        ("StepRecord", Iterate.NONE, 1, None),
    ]
    assert len(table.records) == 4 + 2  # steps + blocks


@pytest.mark.parametrize("routine_id, steps, blocks", [("nausea-pc6", 1, 0), ("headache-li4", 1, 0), ("desk-break", 5, 1), ("full-hand-massage", 9, 1)])
def test_shipped_record_count_is_steps_plus_blocks(routine_id, steps, blocks):
    table = build_table(load_routine(routine_id))
    assert len(table.records) == steps + blocks
    assert sum(isinstance(r, LoopRecord) for r in table.records) == blocks


def test_step_repeat_is_a_count_not_copies():
    table = build_table(load_routine_text(one_step('technique = "combing"\nrepeat = 4', hands="left")))
    assert len(table.records) == 1
    assert table.records[0].count == 4 and table.records[0].iterate == Iterate.NONE


def test_same_input_gives_the_same_bytes(tmp_path):
    path = write(tmp_path, (shipped_routines()["full-hand-massage"]).read_text())
    first = compile_routine(load_routine(path))
    second = compile_routine(load_routine(path))
    assert first == second
    assert compile_routine(load_routine(path), names=False) == compile_routine(load_routine(path), names=False)
    assert first == compile_routine(load_routine("full-hand-massage"))


def test_identical_patterns_are_shared():
    table = build_table(load_routine("full-hand-massage"))
    assert [p.name for p in table.patterns] == ["switch", "start", "tick", "next", "warn", "done"]
    assert len({p.segments for p in table.patterns}) == len(table.patterns)


def test_step_defaults_come_from_the_technique():
    table = build_table(load_routine_text(one_step('technique = "acupressure:PC6"')))
    (record,) = table.records
    assert isinstance(record, StepRecord)
    assert record.technique == TechniqueCode.ACUPRESSURE_PC6
    assert (record.duration_ms, record.iterate, record.count) == (300_000, Iterate.HAND, 2)
    assert (record.tick_every_ms, record.warn_before_ms) == (30_000, 10_000)
    names = [table.pattern_label(i) for i in (record.start_pattern, record.next_pattern, record.tick_pattern, record.warn_pattern)]
    assert names == ["start", "switch", "tick", "warn"]


def test_false_silences_a_cue():
    table = build_table(load_routine_text(one_step('technique = "palm_spread"\nstart = false\ntick = false', head="finish = false")))
    (record,) = table.records
    assert (record.start_pattern, record.tick_pattern, record.tick_every_ms) == (None, None, 0)
    assert table.done_pattern is None and table.patterns == []


def load_routine_text(text: str):
    routine, found = parse_routine(text, "r.toml")
    assert routine is not None, [str(d) for d in found]
    return routine


# --------------------------------------------------------------------------
# Durations


@pytest.mark.parametrize(
    "value, ms",
    [
        (90, 90_000),
        (90.0, 90_000),
        ("1:30", 90_000),
        ("0:05", 5_000),
        ("1 min 30 s", 90_000),
        ("1min30s", 90_000),
        ("5 min", 300_000),
        (" 5 MIN ", 300_000),
        ("2.5 s", 2_500),
        ("1h", 3_600_000),
        ("1 h 1 m", 3_660_000),
        (0.25, 300),  # 250 ms: halves round up to the next 100 ms unit
        (0.249, 200),
        (1.25, 1_300),
        (0.04, 0),
        ("0.05 s", 100),
    ],
)
def test_parse_duration(value, ms):
    assert parse_duration(value) == ms


@pytest.mark.parametrize("value, ms", [("250 ms", 300), ("249 ms", 200), ("1500 ms", 1_500)])
def test_parse_duration_milliseconds(value, ms):
    assert parse_duration(value) == ms


@pytest.mark.parametrize("value, ms", [("5 mins", 300_000), ("2 minutes", 120_000), ("30 sec", 30_000), ("2 seconds", 2_000), ("1 hour", 3_600_000)])
def test_parse_duration_long_unit_names(value, ms):
    assert parse_duration(value) == ms


def test_parse_duration_numeric_string_means_seconds():
    assert parse_duration("90") == 90_000


@pytest.mark.parametrize("value", ["", "abc", "5 parsecs", "1:75", "5 min later", "min", -1, True, None, [30], "-5 s"])
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError):
        parse_duration(value)


def test_durations_in_a_routine_are_rounded_to_100_ms():
    table = build_table(load_routine_text(one_step('technique = "combing"\nduration = 10.05', hands="left")))
    assert table.records[0].duration_ms == 10_100


def test_halfway_cue_is_half_the_duration_rounded():
    table = build_table(load_routine_text(one_step('technique = "warm_up"\nduration = "45.1 s"', hands="left")))
    assert table.records[0].tick_every_ms == 22_600  # 22 550 ms rounds half up


# --------------------------------------------------------------------------
# Former bugs, kept as regression tests


def test_repeat_block_of_plain_steps_loads():
    text = 'name = "t"\nhands = "left"\n[[steps]]\nrepeat = 2\nnext = "next"\n[[steps.steps]]\ntechnique = "warm_up"\n[[steps.steps]]\ntechnique = "combing"\n'
    routine, found = parse_routine(text, "r.toml")
    assert routine is not None, [str(d) for d in found]
    table = build_table(routine)
    assert [type(r) for r in table.records] == [LoopRecord, StepRecord, StepRecord]
    assert table.records[0].count == 2


def test_blocks_nest_to_four_levels_and_not_five():
    def nested(levels: int) -> str:
        inner: str = '{ technique = "combing" }'
        for _ in range(levels):
            inner = f'{{ repeat = 2, next = "next", steps = [{inner}] }}'
        return f'name = "t"\nhands = "left"\nsteps = [{inner}]\n'

    routine, found = parse_routine(nested(4), "r.toml")
    assert routine is not None, [str(d) for d in found]
    assert len(build_table(routine).records) == 5
    errors = errors_of(nested(5))
    assert errors == ["r.toml: steps[0].steps[0].steps[0].steps[0].steps[0]: blocks nest deeper than 4 levels"]


def test_every_vocabulary_cue_respects_the_pattern_limits():
    for name, cue in CUE_VOCABULARY.items():
        assert pattern_problem(cue.pattern) is None, name


def test_cue_vocabulary_values():
    # shared/techniques.md, except "round": its 70 ms gaps are widened to the 100 ms minimum gap
    assert {name: cue.on_off for name, cue in CUE_VOCABULARY.items()} == {
        "tick": "50",
        "start": "80",
        "next": "80/120/80",
        "warn": "60/100/60/100/60",
        "switch": "300/150/80",
        "round": "50/100/50/100/50/100/50",
        "done": "400/200/400",
        "alert": "750",
    }


def test_repeat_block_with_the_default_round_cue_compiles(tmp_path):
    assert pattern_problem(CUE_VOCABULARY["round"].pattern) is None
    text = 'name = "t"\nhands = "left"\n[[steps]]\nrepeat = 2\n[[steps.steps]]\ntechnique = "doorknob"\n'
    routine, diagnostics_found = check_routine(write(tmp_path, text))
    assert routine is not None and diagnostics_found == []
    table = read_table(compile_routine(routine))
    assert table.pattern_label(table.records[0].round_pattern) == "round"


def test_custom_pattern_meaning_is_kept():
    text = ('name = "t"\nhands = "left"\n[patterns.knock]\non_off = "100/150/100"\nmeaning = "knock knock"\n'
            '[[steps]]\ntechnique = "combing"\nstart = "knock"\n')
    routine, found = parse_routine(text, "r.toml")
    assert routine is not None, [str(d) for d in found]
    assert routine.meanings == {"knock": "knock knock", "done": "routine finished"}


def test_block_played_once_carries_no_round_cue():
    routine, found = parse_routine('name = "t"\nhands = "left"\n[[steps]]\nsteps = [{ technique = "combing" }]\n', "r.toml")
    assert routine is not None, [str(d) for d in found]
    assert routine.steps[0].next is None
    assert "round" not in routine.patterns


def test_tick_that_coincides_with_the_warning_is_a_warning():
    text = 'name = "t"\nhands = "left"\n[[steps]]\ntechnique = "joystick"\nduration = "20 s"\n'  # halfway at 10 s, warn 10 s before the end
    routine, found = parse_routine(text, "r.toml")
    assert routine is not None
    assert [str(d) for d in found] == [
        "r.toml: warning: steps[0] (step 1, joystick).warn_before: the halfway cue at 10 s coincides with the warning, and the warning wins: that cue is never felt"
    ]
