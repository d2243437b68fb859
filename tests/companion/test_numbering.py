"""One numbering and one truth (issue 12, point 3): step numbers, counts, the file CRC-32 and times left."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from companion import compile_routine, load_routine
from companion.card import routine_card
from companion.cli import cli
from companion.cli_band import describe_status
from companion.render import left_text
from protocol.constants import BandState, TechniqueCode
from protocol.messages import StatusReport

ROUTINE = """name = "Numbered"
hands = "both"

[[steps]]
technique = "warm_up"

[[steps]]
for_each = "hand"

  [[steps.steps]]
  technique = "joystick"

  [[steps.steps]]
  technique = "flex_extend"
  {flex}

[[steps]]
technique = "combing"
"""


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_a_step_has_one_number_in_check_inspect_timeline_and_card(tmp_path: Path):
    good = tmp_path / "good.toml"
    good.write_text(ROUTINE.format(flex=""))
    bad = tmp_path / "bad.toml"
    bad.write_text(ROUTINE.format(flex='duration = "soon"'))

    assert "steps[1].steps[1] (step 3, flex_extend).duration" in run("check", str(bad)).output
    inspect_line = next(line for line in run("inspect", str(good)).output.splitlines() if "flex_extend" in line)
    assert re.match(r"  \[\s*3\] step 3 ", inspect_line), inspect_line
    timeline = [line.split() for line in run("inspect", "--timeline", str(good)).output.splitlines() if "flex_extend" in line]
    assert timeline and {row[4] for row in timeline} == {"3"}
    assert "### 3. Flexion and extension" in routine_card(load_routine(good), "md")


def test_counts_are_the_same_words_on_the_card_and_in_inspect():
    card = routine_card(load_routine("full-hand-massage"), "md")
    inspect = run("inspect", "full-hand-massage").output.splitlines()[1]
    assert "**Steps:** 9 steps (50 plays), 75 cues" in card
    assert "9 steps (50 plays), 75 cues" in inspect
    doc = json.loads(run("inspect", "--json", "full-hand-massage").output)
    assert (doc["steps"], doc["step_plays"], doc["cues"]) == (9, 50, 75)


@pytest.mark.parametrize("names", [True, False])
def test_inspect_json_reports_the_file_crc32_that_compile_shows(tmp_path: Path, names: bool):
    table = tmp_path / "pc6.hcue"
    compiled = run("compile", "nausea-pc6", "-o", str(table), *([] if names else ["--no-names"]))
    shown = re.search(r"CRC-32 (0x[0-9A-F]{8})", compiled.output)
    assert shown is not None
    doc = json.loads(run("inspect", "--json", str(table)).output)
    data = table.read_bytes()
    assert doc["crc32"] == shown.group(1) == f"0x{zlib.crc32(data):08X}"
    assert doc["header_crc32"] == f"0x{int.from_bytes(data[4:8], 'little'):08X}" != doc["crc32"]
    assert data == compile_routine(load_routine("nausea-pc6"), names=names)


@pytest.mark.parametrize(("ms", "shown"), [(45_000, "45 s"), (44_001, "45 s"), (44_000, "44 s"), (1, "1 s"), (0, "0 s"), (90_500, "1 min 31 s")])
def test_times_left_are_rounded_up(ms: int, shown: str):
    assert left_text(ms) == shown


def test_a_45_s_step_starts_at_45_s_left():
    status = StatusReport(state=BandState.RUNNING, step=1, technique=TechniqueCode.from_text_id("warm_up"), iteration=0, hand="left",
                          finger=None, elapsed_ms=0, remaining_ms=1_109_999, step_remaining_ms=45_000, total_ms=1_110_000, last_cue=None,
                          cues=0, battery=80)
    line = describe_status(status, {1: 1})
    assert "45 s left in step" in line and "18 min 30 s left" in line
    assert "step 1 warm_up" in line
    assert "step 1" not in describe_status(status)  # without the table the step is named, never misnumbered


def test_numbering_the_steps_for_status_needs_no_timeline_walk():
    """status and start print the step's number and the time left from render's numbering alone: the
    timeline's and the iterations' walks (4-6 ms of imports) are loaded only by the views that walk a table."""
    code = (
        "import sys\n"
        "from companion import compile_routine, load_routine\n"
        "from protocol.table import decode_table\n"
        "data = compile_routine(load_routine('full-hand-massage'))\n"
        "table = decode_table(data)\n"
        "loaded = set(sys.modules)\n"
        "from companion.render import clock, left_text, step_numbers\n"
        "print(sorted(step_numbers(table).values())[:3], clock(61_000), left_text(61_000))\n"
        "print(sorted(m for m in ('protocol.timeline', 'protocol.iterations') if m in sys.modules and m not in loaded))\n"
        "from companion.render import step_plays, timeline\n"
        "print(step_plays(table) > 0, sum(1 for _ in timeline(data)) > 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("[1, 2, 3]") and lines[1:] == ["[]", "True True"]
