"""Acknowledgement in the companion: routine keys and their errors, inspect, card, plot, and a band that cannot play it."""

from __future__ import annotations

import asyncio
import json
from functools import partial
from pathlib import Path

import pytest
from click.testing import CliRunner

from companion import compile_routine
from companion.card import ACK_MARK, routine_card
from companion.cli import cli
from companion.errors import RoutineError, TableRefusedError
from companion.render import table_json, table_text, timeline, timeline_lines
from companion.routine import checked, load_routine, parse_routine
from firmware_sim.band import Band
from firmware_sim.buttons import BandButton
from firmware_sim.clock import VirtualClock
from firmware_sim.local import storage_with
from protocol.constants import TableError
from protocol.table import decode_table, unsupported_version_text

ROUTINE = '''name = "ack"
hands = "left"
finish_ack = true
[[steps]]
technique = "warm_up"
duration = 10
ack = true
[[steps]]
technique = "palm_spread"
duration = 20
'''


def errors_of(text: str) -> list[str]:
    _routine, diagnostics = parse_routine(text, "r.toml")
    return [str(d) for d in diagnostics if d.severity == "error"]


def ack_table() -> bytes:
    return compile_routine(checked(*parse_routine(ROUTINE, "ack.toml")))


# --------------------------------------------------------------------------
# Routine keys


def test_ack_keys_compile_to_the_step_flag_and_the_finish_flag():
    routine = checked(*parse_routine(ROUTINE, "ack.toml"))
    assert routine.finish_ack and routine.uses_ack
    assert [step.ack for step in routine.steps] == [True, False]
    table = decode_table(compile_routine(routine))
    assert table.format_version == 2 and table.done_ack and [r.ack for r in table.records] == [True, False]


@pytest.mark.parametrize(("text", "expected"), [
    ('name = "r"\n[[steps]]\ntechnique = "combing"\nack = "yes"\n', 'r.toml: steps[0] (step 1, combing).ack: "yes"; allowed: true or false'),
    ('name = "r"\n[[steps]]\ntechnique = "combing"\nstart = false\nack = true\n',
     "r.toml: steps[0] (step 1, combing).ack: needs a start cue to repeat, but start = false"),
    ('name = "r"\nfinish = false\nfinish_ack = true\n[[steps]]\ntechnique = "combing"\n',
     "r.toml: finish_ack: needs a finish cue to repeat, but finish = false"),
    ('name = "r"\nfinish_ack = 1\n[[steps]]\ntechnique = "combing"\n', "r.toml: finish_ack: 1; allowed: true or false"),
    ('name = "r"\nack = true\n[[steps]]\ntechnique = "combing"\n',
     "r.toml: ack: not a routine key; the finish waits for an acknowledgement with finish_ack = true, a step with ack = true"),
    ('name = "r"\n[[steps]]\nrepeat = 2\nack = true\n[[steps.steps]]\ntechnique = "combing"\n',
     "r.toml: steps[0].ack: a block does not wait for an acknowledgement; put ack = true on its first step"),
    ('name = "r"\n[patterns]\nbuzz = { on_off = "100", ack = true }\n[[steps]]\ntechnique = "combing"\nstart = "buzz"\n',
     "r.toml: patterns.buzz.ack: a cue pattern does not wait for an acknowledgement; put ack = true on the step that plays it"),
])
def test_ack_in_the_wrong_place_names_file_step_and_field(text, expected):
    assert expected in errors_of(text)


def test_a_routine_without_ack_keeps_format_1_bytes():
    assert compile_routine(load_routine("nausea-pc6"))[8] == 1
    plain = compile_routine(checked(*parse_routine(ROUTINE.replace("finish_ack = true\n", "").replace("ack = true\n", ""), "p.toml")))
    assert plain[8] == 1 and plain[9] == 0x01


# --------------------------------------------------------------------------
# inspect


def test_inspect_text_and_json_show_the_acknowledgement_points():
    data = ack_table()
    text = table_text(data)
    assert "format 2" in text
    [step_1] = [line for line in text.splitlines() if "warm_up" in line]
    assert step_1.endswith("; waits for acknowledgement after its start cue")
    assert "acknowledgement" not in next(line for line in text.splitlines() if "palm_spread" in line)
    assert "done: done at 0:30.000, waits for acknowledgement" in text
    assert "the times above assume a press at the first cue" in text
    as_json = table_json(data)
    assert as_json["format_version"] == 2 and as_json["done_ack"] is True and as_json["records"][0]["ack"] is True


def test_timeline_marks_the_waits_and_says_what_it_assumes():
    data = ack_table()
    never = list(timeline_lines(data, timeline(data, ack_wait_ms=None), None))
    marked = [line for line in never if "ack:" in line]
    assert sum("ack: waits for a press" in line for line in marked) == 1 + 2  # the start cue; done's two pulses
    assert sum(line.split()[2] == "start" and "ack: repeat" in line for line in marked) == 11
    assert never[-2].endswith("the routine ends at 2:30.000")  # 30 s of steps + two waits of 1 min
    assert "this timeline assumes the wearer never presses (the band gives up after 1 min" in never[-1]
    first = list(timeline_lines(data, timeline(data), 0))
    assert "ack: repeat" not in "\n".join(first) and first[-1].endswith("assumes the wearer presses at the first cue")
    assert not any("ack" in line for line in timeline_lines(compile_routine(load_routine("nausea-pc6")),
                                                            timeline(compile_routine(load_routine("nausea-pc6")))))


def test_cli_inspect_ack_wait(tmp_path: Path):
    routine = tmp_path / "ack.toml"
    routine.write_text(ROUTINE)
    runner = CliRunner()
    result = runner.invoke(cli, ["inspect", str(routine), "--timeline", "--json", "--ack-wait", "7"])
    assert result.exit_code == 0, result.output
    starts = [e["t_ms"] for e in json.loads(result.output) if e["cue"] == "start"]
    assert starts == [0, 5_000, 17_000]
    bad = runner.invoke(cli, ["inspect", str(routine), "--timeline", "--ack-wait", "soon"])
    assert bad.exit_code == 2 and "--ack-wait" in bad.output and "or never" in bad.output
    alone = runner.invoke(cli, ["inspect", str(routine), "--ack-wait", "7"])  # without --timeline it would be ignored
    assert alone.exit_code == 2 and "give --timeline too" in alone.output


# --------------------------------------------------------------------------
# Card and plot


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_card_marks_each_press(fmt):
    import html

    card = html.unescape(routine_card(checked(*parse_routine(ROUTINE, "ack.toml")), fmt))
    assert card.count(f"{ACK_MARK} press the band's button when you feel") == 2
    assert "the step's time starts at the press" in card and "that confirms the routine was done" in card
    assert "every wait for one adds up to 1 min (2 presses in all)" in card
    assert ACK_MARK not in routine_card(load_routine("desk-break"), fmt)


def test_a_step_played_per_finger_waits_at_the_cue_that_begins_each_finger():
    fingers = ROUTINE.replace('technique = "warm_up"', 'technique = "finger_squeeze"')
    card = routine_card(checked(*parse_routine(fingers, "ack.toml")), "md")
    assert "when you feel “start” (at each later finger, the cue that begins it)" in card
    assert "waits for acknowledgement after the cue that begins each play" in table_text(compile_routine(checked(*parse_routine(fingers, "ack.toml"))))


def test_plot_has_a_press_row_only_with_acknowledgements(tmp_path: Path):
    pytest.importorskip("matplotlib")
    import xml.etree.ElementTree as ET

    from companion.plot import ACK_ROW_LABEL, plot_routine

    def texts(data: bytes) -> str:
        out = tmp_path / "p.svg"
        plot_routine(data, out)
        return "\n".join(e.text or "" for e in ET.parse(out).getroot().iter("{http://www.w3.org/2000/svg}text"))

    assert ACK_ROW_LABEL in texts(ack_table())
    assert ACK_ROW_LABEL not in texts(compile_routine(load_routine("desk-break")))


# --------------------------------------------------------------------------
# The simulator's button


def test_simulator_button_acknowledges_when_a_cue_waits_else_opens_pairing():
    said: list[str] = []
    band = Band(storage_with(ack_table()), VirtualClock())
    button = BandButton(band, None, say=said.append)
    button.press()
    assert said == ["button: no BLE, nothing to pair"]  # idle: the pairing window (no BLE here)
    band.start()
    assert band.ack_pending
    button.press()
    assert said[-1] == "acknowledged" and not band.ack_pending and band.acks_given == 1
    button.acknowledge()
    assert said[-1] == "button: nothing waits for an acknowledgement"


# --------------------------------------------------------------------------
# A band whose firmware reads format 1 only


def test_the_refusal_line_names_the_feature_and_what_to_do():
    assert unsupported_version_text(2) == ("this band's firmware does not support acknowledgement (table format 2); "
                                           "update it or remove ack from the routine")
    assert unsupported_version_text(3) is None


def test_a_format_1_band_refuses_an_ack_table_with_a_clear_line(monkeypatch):
    """End to end over BLE: a band whose firmware reads format 1 only answers TABLE_REFUSED / BAD_VERSION; its routine stays."""
    pytest.importorskip("bumble")
    import firmware_sim.storage as storage_module
    from companion.ble.bumble_backend import BumbleCentral
    from companion.client import BandClient
    from firmware_sim.local import LocalBleBand

    old = compile_routine(load_routine("nausea-pc6"))

    async def main() -> tuple[TableRefusedError, int | None]:
        async with LocalBleBand(old) as local, BumbleCentral(link=local.link) as central:
            monkeypatch.setattr(storage_module, "decode_table", partial(decode_table, versions=(1,)))  # the old firmware's reader
            async with BandClient.open("ble:HandCue-1A2B", ble=central.backend) as client:
                with pytest.raises(TableRefusedError) as refused:
                    await client.upload(ack_table())
                return refused.value, (await client.info()).routine_crc32

    error, crc = asyncio.run(asyncio.wait_for(main(), 60))
    assert error.detail == TableError.BAD_VERSION
    assert str(error) == ("ble:HandCue-1A2B: this band's firmware does not support acknowledgement (table format 2); "
                          "update it or remove ack from the routine")
    import zlib

    assert crc == zlib.crc32(old)


def test_routine_error_class_is_the_companions():
    with pytest.raises(RoutineError, match="ack: needs a start cue"):
        checked(*parse_routine('name = "r"\n[[steps]]\ntechnique = "combing"\nstart = false\nack = true\n', "r.toml"))


def test_simulator_trace_has_the_acknowledgement_points_and_the_never_pressed_timeline(tmp_path):
    """handcue-sim --trace writes ack lines (waiting, then missed at the cap) beside motor events equal to the timeline."""
    import subprocess
    import sys

    from protocol.constants import Ack
    from protocol.table import decode_table as read
    from protocol.timeline import table_timeline

    routine, trace = tmp_path / "ack.toml", tmp_path / "trace.jsonl"
    routine.write_text(ROUTINE)
    result = subprocess.run([sys.executable, "-m", "firmware_sim", "--load", str(routine), "--start", "--clock", "virtual",
                             "--trace", str(trace), "--exit-on-finish"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    cap = Ack.GIVE_UP_MS
    assert [(e["t_ms"], e["cue"], e["outcome"]) for e in events if e["event"] == "ack"] == [
        (0, "start", "waiting"), (cap, "start", "missed"), (cap + 30_000, "done", "waiting"), (2 * cap + 30_000, "done", "missed")]
    motor = [{k: v for k, v in e.items() if k != "event"} for e in events if e["event"] == "motor"]
    assert motor == [e.to_json() for e in table_timeline(read(ack_table()), ack_wait_ms=None)]
