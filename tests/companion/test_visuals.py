"""Visuals: the timeline plot, the printable routine card and their CLI commands."""

from __future__ import annotations

import html
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

import companion.cli_visual  # noqa: F401  (registers `plot` and `card` on the CLI group)
from companion import compile_routine, load_routine, read_table
from companion.card import build_card, rhythm, routine_card
from companion.cli import cli
from companion.plot import expand_steps, plot_routine
from companion.routine import Block, Routine, Step, format_ms
from companion.techniques import CUE_VOCABULARY, TECHNIQUES, parse_on_off
from protocol.constants import CueKind
from protocol.errors import HandCueError
from protocol.timeline import table_cues

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG_NS = "{http://www.w3.org/2000/svg}"

# Loops of every kind: a plain step, a hand block holding a finger block (with a
# repeated step) and a single step, a repeat block, custom cues, and a name that
# needs escaping everywhere.
LOOPS_TOML = """
name = "Loops <script>alert(1)</script> & $5"
description = "- every kind of loop | *all* of them"
hands = "right-left"
finish = "bye"

[patterns]
nudge = "40/120/40"
bye = { on_off = "300/150/100/150/100", amplitude = 80, meaning = "see you tomorrow" }

[[steps]]
technique = "warm_up"
duration = "30 s"
note = "Both hands <b>together</b>"

[[steps]]
for_each = "hand"

  [[steps.steps]]
  for_each = "finger"
  next = "nudge"

    [[steps.steps.steps]]
    technique = "key_grip"
    duration = "6 s"
    for_each = "none"
    repeat = 2

    [[steps.steps.steps]]
    technique = "doorknob"
    duration = "4 s"
    for_each = "none"

  [[steps.steps]]
  technique = "acupressure:LI4"
  duration = "5 min"
  for_each = "none"
  tick_every = "1 min"

[[steps]]
repeat = 3

  [[steps.steps]]
  technique = "palm_spread"
  duration = "20 s"

  [[steps.steps]]
  technique = "handshake"
  duration = "30 s"
  warn_before = "5 s"

[[steps]]
technique = "acupressure:PC6"
duration = "5 min"
tick_every = "30 s"

[[steps]]
technique = "combing"
duration = "45 s"
start = "nudge"
"""


@pytest.fixture
def loops_file(tmp_path: Path) -> Path:
    path = tmp_path / "loops.toml"
    path.write_text(LOOPS_TOML, encoding="utf-8")
    return path


@pytest.fixture
def loops(loops_file: Path) -> Routine:
    return load_routine(loops_file)


def steps_in_order(items: list[Step | Block]) -> list[Step]:
    result: list[Step] = []
    for item in items:
        result += steps_in_order(item.steps) if isinstance(item, Block) else [item]
    return result


def used_cue_names(routine: Routine) -> list[str]:
    return [row.name for row in build_card(routine).vibrations]


def svg_texts(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    return [element.text or "" for element in root.iter(f"{SVG_NS}text")]


def assert_in_order(text: str, needles: list[str]) -> None:
    position = 0
    for needle in needles:
        found = text.find(needle, position)
        assert found >= 0, f"{needle!r} missing (or out of order) after position {position}"
        position = found + len(needle)


# --------------------------------------------------------------------------
# Step expansion (what the plot draws as bands)


@pytest.mark.parametrize("routine", ["full-hand-massage", "headache-li4", "loops"])
def test_expanded_steps_match_the_cue_timeline(routine: str, loops_file: Path) -> None:
    table = read_table(compile_routine(load_routine(loops_file if routine == "loops" else routine)))
    iterations = expand_steps(table)
    t = 0
    for iteration in iterations:  # back to back, covering the whole routine
        assert iteration.t_ms == t
        t += iteration.duration_ms
    assert t == table.total_ms
    starts = {(it.t_ms, it.step): it for it in iterations}
    for cue in table_cues(table):
        if cue.kind in (CueKind.START, CueKind.NEXT, CueKind.SWITCH, CueKind.ROUND) and cue.step is not None:
            iteration = starts.get((cue.t_ms, cue.step))
            if iteration is None:  # a step's own "next" cue between iterations was merged away: not here
                continue
            assert (iteration.hand, iteration.finger) == (cue.hand, cue.finger)


def test_expanded_steps_bind_hands_fingers_and_rounds(loops_file: Path) -> None:
    table = read_table(compile_routine(load_routine(loops_file)))
    iterations = expand_steps(table)
    key_grips = [it for it in iterations if it.record.technique.text_id == "key_grip"]
    assert len(key_grips) == 2 * 5 * 2  # hands x fingers x repeat
    assert [(it.hand, it.finger) for it in key_grips[:4]] == [("right", "thumb")] * 2 + [("right", "index")] * 2
    assert key_grips[-1].hand == "left" and key_grips[-1].finger == "little"
    palm = [it for it in iterations if it.record.technique.text_id == "palm_spread"]
    assert [it.rounds for it in palm] == [(1,), (2,), (3,)]
    pc6 = [it for it in iterations if it.record.technique.text_id == "acupressure:PC6"]
    assert [it.hand for it in pc6] == ["right", "left"]  # a per-hand step binds each hand in turn


# --------------------------------------------------------------------------
# Plot


def test_plot_png(tmp_path: Path) -> None:
    output = tmp_path / "full.png"
    plot_routine(compile_routine(load_routine("full-hand-massage")), output)
    assert output.read_bytes().startswith(PNG_MAGIC)


def test_plot_svg_labels_every_technique(tmp_path: Path, loops: Routine) -> None:
    output = tmp_path / "loops.SVG"
    plot_routine(compile_routine(loops), output)
    texts = svg_texts(output)
    joined = "\n".join(texts)
    for step in steps_in_order(loops.steps):
        assert step.technique in joined
    for name in used_cue_names(loops):
        assert any(text.startswith(f"{name} ") for text in texts), name
    assert any(text.startswith("Loops <script>alert(1)</script> & $5") for text in texts)  # literal, no mathtext


def test_plot_without_names(tmp_path: Path) -> None:
    output = tmp_path / "stripped.svg"
    plot_routine(compile_routine(load_routine("desk-break"), names=False), output)
    texts = svg_texts(output)
    assert any("names stripped" in text for text in texts)
    assert any(text.startswith("#0 ") for text in texts)


def test_plot_refuses_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(HandCueError, match=r"\.png or \.svg"):
        plot_routine(compile_routine(load_routine("desk-break")), tmp_path / "x.jpg")


def test_plot_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.raises(HandCueError, match=r'plotting needs matplotlib: pip install -e "\.\[plot\]"'):
        plot_routine(compile_routine(load_routine("desk-break")), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------
# Card


def test_rhythm_bars() -> None:
    assert rhythm(parse_on_off("80/120/80")) == "▮▮▯▯▮▮"
    assert rhythm(parse_on_off("50")) == "▮"
    assert rhythm(parse_on_off("60/100/60/100/60")) == "▮▯▯▮▯▯▮"


@pytest.mark.parametrize("fmt", ["md", "html"])
@pytest.mark.parametrize("routine", ["full-hand-massage", "loops"])
def test_card_lists_steps_durations_and_cue_meanings(fmt: str, routine: str, loops_file: Path) -> None:
    parsed = load_routine(loops_file if routine == "loops" else routine)
    text = routine_card(parsed, fmt)
    escape = html.escape if fmt == "html" else (lambda value: value)
    steps = steps_in_order(parsed.steps)
    assert_in_order(text, ["What each vibration means", "Steps", *(escape(TECHNIQUES[s.technique].name) for s in steps)])
    assert_in_order(text, [f"{i}. " for i in range(1, len(steps) + 1)])
    assert format_ms(parsed.total_ms) in text
    for step in steps:
        assert format_ms(step.duration_ms) in text
        assert escape(TECHNIQUES[step.technique].how) in text
        if step.count > 1:
            assert format_ms(step.total_ms) in text
    for name in used_cue_names(parsed):
        meaning = CUE_VOCABULARY[name].meaning if name in CUE_VOCABULARY else "custom"
        assert escape(meaning) in text
    assert "Not medical advice" in text


def test_card_cue_timings_and_hands() -> None:
    text = routine_card(load_routine("full-hand-massage"), "md")
    assert "left, then right" in text
    assert "0:00 (left), 9:15 (right)" in text  # the hand block's rounds
    assert "before the next hand" in text
    assert "before each next finger" in text
    assert "every 5 s" not in text and "5 s into each finger (halfway)" in text
    assert "every 15 s during the step" in text
    assert "10 s before the end of the step" in text
    assert "when the routine is over (18:30)" in text


def test_card_only_lists_used_cues(loops: Routine) -> None:
    names = used_cue_names(loops)
    assert set(names) == {"start", "tick", "switch", "nudge", "next", "warn", "round", "bye"}
    assert "alert" not in names and "done" not in names
    assert used_cue_names(load_routine("desk-break")) == ["switch", "start", "tick", "next", "done"]


def test_card_html_is_escaped_and_self_contained(loops: Routine) -> None:
    text = routine_card(loops, "html")
    assert "<script" not in text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; $5" in text
    assert "&lt;b&gt;together&lt;/b&gt;" in text
    assert text.startswith("<!DOCTYPE html>") and "<style>" in text and "@media print" in text
    assert "<link" not in text and "src=" not in text and "http" not in text


def test_card_markdown_is_escaped(loops: Routine) -> None:
    text = routine_card(loops, "md")
    assert text.startswith("# Loops \\<script\\>alert(1)\\</script\\> \\& \\$5\n")
    assert "\n\\- every kind of loop \\| \\*all\\* of them\n" in text
    assert "<b>" not in text


def test_card_unknown_format(loops: Routine) -> None:
    with pytest.raises(ValueError, match="card format"):
        routine_card(loops, "pdf")


# --------------------------------------------------------------------------
# CLI


def run(*args: str):
    return CliRunner().invoke(cli, list(args), prog_name="handcue")


def test_cli_plot_routine_and_table(tmp_path: Path) -> None:
    table = tmp_path / "desk.hcue"
    table.write_bytes(compile_routine(load_routine("desk-break")))
    png, svg = tmp_path / "desk.png", tmp_path / "desk.svg"
    result = run("plot", "desk-break", "-o", str(png))
    assert result.exit_code == 0, result.output
    assert png.read_bytes().startswith(PNG_MAGIC)
    result = run("plot", str(table), "--output", str(svg))
    assert result.exit_code == 0, result.output
    assert "warm_up" in "\n".join(svg_texts(svg))


@pytest.mark.parametrize("suffix", [".html", ".md"])
def test_cli_card(tmp_path: Path, suffix: str) -> None:
    output = tmp_path / f"card{suffix}"
    result = run("card", "nausea-pc6", "-o", str(output))
    assert result.exit_code == 0, result.output
    text = output.read_text(encoding="utf-8")
    assert "Pericardium 6 (Neiguan)" in text and "switch hands" in text


@pytest.mark.parametrize(("command", "name"), [("plot", "x.jpg"), ("plot", "x"), ("card", "x.pdf"), ("card", "x.png")])
def test_cli_refuses_unknown_suffix(tmp_path: Path, command: str, name: str) -> None:
    result = run(command, "desk-break", "-o", str(tmp_path / name))
    assert result.exit_code == 2, result.output
    assert "does not end in one of" in result.output
    assert not (tmp_path / name).exists()


def test_cli_card_needs_a_routine(tmp_path: Path) -> None:
    result = run("card", "no-such-routine", "-o", str(tmp_path / "card.md"))
    assert result.exit_code == 1
    assert "no such file or shipped routine" in result.output
