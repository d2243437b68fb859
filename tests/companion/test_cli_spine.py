"""The ``handcue`` CLI spine: techniques, routines, check, compile, inspect.

Most tests use click's CliRunner on ``companion.cli.cli``; a few run the real
console script in a subprocess to check exit codes and stderr end to end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from companion import compile_routine, load_routine, shipped_routines
from companion.cli import cli
from protocol.constants import TechniqueCode
from protocol.table import Header, decode_table
from protocol.timeline import table_timeline

TECHNIQUE_IDS = [
    "warm_up", "joystick", "acupressure", "acupressure:PC6", "acupressure:LI4", "flex_extend",
    "finger_squeeze", "key_grip", "doorknob", "handshake", "palm_spread", "combing",
]
ROUTINE_IDS = ["desk-break", "full-hand-massage", "headache-li4", "nausea-pc6"]

BAD_ROUTINE = """name = "bad"
hands = "both"

[[steps]]
technique = "key-grip"

[[steps]]
technique = "handshake"
durration = "75 s"

[[steps]]
technique = "combing"
duration = "five min"
"""


def run(*args: str):
    result = CliRunner().invoke(cli, list(args), prog_name="handcue")
    return result


def assert_clean_failure(result, exit_code: int = 1) -> None:
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


def handcue_command() -> list[str]:
    script = Path(sys.executable).with_name("handcue")
    if script.is_file():
        return [str(script)]
    found = shutil.which("handcue")
    if found:
        return [found]
    return [sys.executable, "-c", "from companion.cli import main; main()"]


def run_process(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*handcue_command(), *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


# --------------------------------------------------------------------------
# Library listings


def test_techniques_lists_the_twelve_ids():
    result = run("techniques")
    assert result.exit_code == 0, result.output
    ids = [line.split()[0] for line in result.output.splitlines() if line and not line.startswith(" ")]
    assert ids == TECHNIQUE_IDS
    assert "acupressure:PC6" in ids and "acupressure:LI4" in ids


def test_techniques_json():
    result = run("techniques", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.output)
    assert [row["id"] for row in rows] == TECHNIQUE_IDS
    assert [row["code"] for row in rows] == [int(TechniqueCode.from_text_id(i)) for i in TECHNIQUE_IDS] == list(range(1, 13))
    by_id = {row["id"]: row for row in rows}
    assert by_id["acupressure:PC6"]["acupressure"] is True
    assert by_id["acupressure:LI4"]["default_duration_s"] == 300
    assert by_id["acupressure:LI4"]["for_each"] == "hand"
    assert by_id["combing"]["acupressure"] is False
    assert by_id["flex_extend"]["for_each"] == "finger"
    assert set(rows[0]) == {"id", "code", "name", "how", "default_time", "cue_notes", "default_duration_s", "for_each", "acupressure"}


def test_routines_lists_the_four_ids():
    result = run("routines")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines[:4]] == ROUTINE_IDS
    assert "10 min  Nausea relief (PC6)" in result.output
    assert "18 min 30 s  Full hand massage" in result.output


def test_routines_json():
    result = run("routines", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.output)
    assert [row["id"] for row in rows] == ROUTINE_IDS
    durations = {row["id"]: row["duration_ms"] for row in rows}
    assert durations == {"desk-break": 310_000, "full-hand-massage": 1_110_000, "headache-li4": 600_000, "nausea-pc6": 600_000}
    assert all(row["hands"] == ["left", "right"] for row in rows)
    assert all(Path(row["file"]) == shipped_routines()[row["id"]] for row in rows)


# --------------------------------------------------------------------------
# check


@pytest.mark.parametrize("routine_id, size", [("nausea-pc6", 76), ("full-hand-massage", 228)])
def test_check_ok(routine_id, size):
    result = run("check", routine_id)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    name = load_routine(routine_id).name
    total = {"nausea-pc6": "10 min", "full-hand-massage": "18 min 30 s"}[routine_id]
    assert result.stdout == f"{routine_id}: ok: {name}, {total}, {size} bytes compiled (--no-names)\n"


def test_check_ok_with_a_file_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(shipped_routines()["desk-break"].read_text())
    result = run("check", str(path))
    assert result.exit_code == 0
    assert result.stdout.startswith(f"{path}: ok: Desk break, 5 min 10 s, 152 bytes")


def test_check_failing_prints_one_line_per_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(BAD_ROUTINE)
    result = run("check", str(path))
    assert_clean_failure(result)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 3
    assert all(line.startswith(f"error: {path}: ") for line in lines)
    assert lines[0].endswith(": steps[0] (step 1).technique: \"key-grip\" is not in the library (did you mean 'key_grip'?); see `handcue techniques`")
    assert ": steps[1] (step 2, handshake): unknown key 'durration' (did you mean 'duration'?); allowed: " in lines[1]
    assert ": steps[2] (step 3, combing).duration: \"five min\" is not a duration" in lines[2]


def test_check_safety_error(tmp_path):
    path = tmp_path / "pc6.toml"
    path.write_text('name = "pc6"\n[[steps]]\ntechnique = "acupressure:PC6"\nduration = "20 min"\n')
    result = run("check", str(path))
    assert_clean_failure(result)
    assert result.stderr.splitlines() == [
        f"error: {path}: steps[0] (step 1, acupressure:PC6).duration: 20 min of acupressure on the left side exceeds the 15 min limit per point",
        f"error: {path}: steps[0] (step 1, acupressure:PC6).duration: 20 min of acupressure on the right side exceeds the 15 min limit per point",
    ]


def test_check_toml_syntax_error(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\n[[steps]\n')
    result = run("check", str(path))
    assert_clean_failure(result)
    assert result.stderr.splitlines() == [line for line in result.stderr.splitlines() if line.startswith(f"error: {path}:2:")]
    assert len(result.stderr.splitlines()) == 1


def test_check_warnings_keep_exit_zero(tmp_path):
    path = tmp_path / "short.toml"
    path.write_text('name = "short"\n[[steps]]\ntechnique = "acupressure:LI4"\nduration = "2 min"\n')
    result = run("check", str(path))
    assert result.exit_code == 0
    warnings = result.stderr.splitlines()
    assert len(warnings) == 2
    assert all(line.startswith(f"{path}: warning: steps[0] (step 1, acupressure:LI4).duration: 2 min of acupressure") for line in warnings)
    assert "is under the 5 min the article recommends" in warnings[0]
    assert result.stdout.startswith(f"{path}: ok: short, 4 min, ")


# --------------------------------------------------------------------------
# compile


def test_compile_writes_the_same_bytes_twice(tmp_path):
    first, second = tmp_path / "a.hcue", tmp_path / "b.hcue"
    for output in (first, second):
        result = run("compile", "full-hand-massage", "-o", str(output))
        assert result.exit_code == 0, result.output
    data = first.read_bytes()
    assert data == second.read_bytes()
    assert data == compile_routine(load_routine("full-hand-massage"))
    crc = zlib.crc32(data)  # of the whole file, as `upload` and `info` show it
    assert result.stdout == f"wrote {second}: {len(data)} bytes, CRC-32 0x{crc:08X}\n"


def test_compile_no_names_is_smaller(tmp_path):
    named, bare = tmp_path / "named.hcue", tmp_path / "bare.hcue"
    assert run("compile", "nausea-pc6", "-o", str(named)).exit_code == 0
    assert run("compile", "nausea-pc6", "--output", str(bare), "--no-names").exit_code == 0
    assert len(bare.read_bytes()) == 76 < len(named.read_bytes()) == 124
    assert Header.parse(bare.read_bytes()).flags == 0
    assert Header.parse(named.read_bytes()).flags == 1
    assert decode_table(bare.read_bytes()).records == decode_table(named.read_bytes()).records


def test_compile_prints_warnings(tmp_path):
    source = tmp_path / "short.toml"
    source.write_text('name = "short"\n[[steps]]\ntechnique = "acupressure:LI4"\nduration = "2 min"\n')
    result = run("compile", str(source), "-o", str(tmp_path / "short.hcue"))
    assert result.exit_code == 0
    warnings = result.stderr.splitlines()
    assert len(warnings) == 2
    assert all(line.startswith(f"{source}: warning: steps[0] (step 1, acupressure:LI4).duration: ") for line in warnings)
    assert (tmp_path / "short.hcue").is_file()


def test_compile_invalid_routine_writes_nothing(tmp_path):
    source = tmp_path / "bad.toml"
    source.write_text(BAD_ROUTINE)
    output = tmp_path / "bad.hcue"
    result = run("compile", str(source), "-o", str(output))
    assert_clean_failure(result)
    assert len(result.stderr.splitlines()) == 3
    assert not output.exists()


# --------------------------------------------------------------------------
# inspect


@pytest.fixture
def nausea_file(tmp_path) -> Path:
    path = tmp_path / "nausea.hcue"
    path.write_bytes(compile_routine(load_routine("nausea-pc6")))
    return path


def test_inspect_text(nausea_file):
    result = run("inspect", str(nausea_file))
    assert result.exit_code == 0
    lines = result.output.splitlines()
    data = nausea_file.read_bytes()
    header_crc = int.from_bytes(data[4:8], "little")
    assert lines[0] == f"Nausea relief (PC6): 124 bytes, format 1, CRC-32 0x{zlib.crc32(data):08X} (header CRC 0x{header_crc:08X})"
    assert lines[1] == "hands: left, then right; total 10 min; 1 step (2 plays), 23 cues; 1 records, 5 cue patterns"
    assert "acupressure:PC6" in result.output and "for each of 2 hands" in result.output
    assert lines[-1] == "  done: done at 10:00.000"


def test_inspect_a_routine_id_compiles_it_first(nausea_file):
    assert run("inspect", "nausea-pc6").output == run("inspect", str(nausea_file)).output


def test_inspect_without_names(tmp_path):
    path = tmp_path / "bare.hcue"
    path.write_bytes(compile_routine(load_routine("desk-break"), names=False))
    result = run("inspect", str(path))
    assert result.exit_code == 0
    assert result.output.startswith("(names stripped): 152 bytes")
    assert "  done: #" in result.output


def test_inspect_json(nausea_file):
    result = run("inspect", str(nausea_file), "--json")
    assert result.exit_code == 0
    doc = json.loads(result.output)
    data = nausea_file.read_bytes()
    assert doc["name"] == "Nausea relief (PC6)"
    assert doc["size"] == len(data) == 124
    assert doc["format_version"] == 1
    assert doc["crc32"] == f"0x{zlib.crc32(data):08X}"  # the file's CRC-32, as compile, upload and info show it
    assert doc["header_crc32"] == f"0x{zlib.crc32(data[8:]):08X}"
    assert (doc["steps"], doc["step_plays"], doc["cues"]) == (1, 2, 23)
    assert doc["has_names"] is True
    assert doc["hands"] == ["left", "right"]
    assert doc["total_ms"] == 600_000
    assert doc["done_pattern"] == 4
    assert [p["name"] for p in doc["patterns"]] == ["start", "switch", "tick", "warn", "done"]
    assert doc["patterns"][1]["segments"] == [
        {"amplitude": 100, "duration_ms": 300}, {"amplitude": 0, "duration_ms": 150}, {"amplitude": 100, "duration_ms": 80},
    ]
    assert doc["records"] == [{
        "index": 0, "kind": "step", "technique": "acupressure:PC6", "duration_ms": 300_000, "iterate": "hand", "count": 2,
        "tick_every_ms": 30_000, "warn_before_ms": 10_000, "start_pattern": 0, "next_pattern": 1, "tick_pattern": 2, "warn_pattern": 3,
        "step_number": 1,
    }]


def test_inspect_json_loop_record(tmp_path):
    path = tmp_path / "desk.hcue"
    path.write_bytes(compile_routine(load_routine("desk-break")))
    doc = json.loads(run("inspect", str(path), "--json").output)
    assert doc["records"][0] == {"index": 0, "kind": "loop", "iterate": "hand", "count": 2, "body_count": 5, "round_pattern": 0,
                                  "step_number": None}
    assert len(doc["records"]) == 6


@pytest.mark.parametrize("routine_id", ROUTINE_IDS)
def test_inspect_timeline_json_equals_table_timeline(tmp_path, routine_id):
    path = tmp_path / f"{routine_id}.hcue"
    assert run("compile", routine_id, "-o", str(path)).exit_code == 0
    result = run("inspect", str(path), "--timeline", "--json")
    assert result.exit_code == 0
    expected = [event.to_json() for event in table_timeline(decode_table(path.read_bytes()))]
    assert json.loads(result.output) == expected
    assert expected  # every shipped routine produces motor events


def test_inspect_timeline_text(nausea_file):
    result = run("inspect", str(nausea_file), "--timeline")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[-1] == "29 motor events; the routine ends at 10:00.000"
    assert len(lines) == 1 + 29 + 1
    assert lines[1].split()[:4] == ["0", "0:00.000", "start", "start"]


# --------------------------------------------------------------------------
# Failures: exit 1 with a clear line; usage errors exit 2


@pytest.mark.parametrize("command", [["check"], ["inspect"], ["inspect", "--json"], ["compile", "-o", "out.hcue"]])
def test_missing_file_exits_1_with_a_clear_message(tmp_path, command):
    missing = tmp_path / "missing.toml"
    result = run(command[0], str(missing), *command[1:])
    assert_clean_failure(result)
    message = f"{missing}: no such file or shipped routine (shipped: {', '.join(ROUTINE_IDS)})"
    if "--json" in command:  # errors as JSON under --json, on stdout
        assert json.loads(result.stdout) == {"error": message}
    else:
        assert result.stderr == f"error: {message}\n"


def test_corrupt_table_exits_1(tmp_path, nausea_file):
    data = bytearray(nausea_file.read_bytes())
    data[30] ^= 0x01
    nausea_file.write_bytes(bytes(data))
    result = run("inspect", str(nausea_file))
    assert_clean_failure(result)
    assert result.stderr.startswith(f"error: {nausea_file}: CRC-32 is 0x")
    assert "the table is corrupt" in result.stderr


def test_unwritable_output_exits_1(tmp_path):
    output = tmp_path / "no-such-dir" / "x.hcue"
    result = run("compile", "nausea-pc6", "-o", str(output))
    assert_clean_failure(result)
    assert result.stderr == f"error: {output}: No such file or directory\n"


def test_unknown_record_kind_exits_1_cleanly(tmp_path, nausea_file):
    data = bytearray(nausea_file.read_bytes())
    data[24] = 3
    data[4:8] = zlib.crc32(bytes(data[8:])).to_bytes(4, "little")
    nausea_file.write_bytes(bytes(data))
    result = run("inspect", str(nausea_file))
    assert_clean_failure(result)
    assert result.stderr == f"error: {nausea_file}: record 0: unknown kind 3\n"


def crc_fixed(data: bytearray) -> bytes:
    data[4:8] = zlib.crc32(bytes(data[8:])).to_bytes(4, "little")
    return bytes(data)


@pytest.mark.parametrize("offset, value", [(24, 3), (76, 0xFF)], ids=["unknown-record-kind", "name-runs-past-the-end"])
def test_malformed_table_is_reported_on_one_line(nausea_file, offset, value):
    data = bytearray(nausea_file.read_bytes())
    data[offset] = value
    nausea_file.write_bytes(crc_fixed(data))
    result = run("inspect", str(nausea_file))
    assert_clean_failure(result)
    assert len(result.stderr.splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    "args",
    [["compile", "nausea-pc6"], ["no-such-command"], ["check"], ["inspect"], ["techniques", "--yaml"], ["check", "a", "b"]],
    ids=["missing-option", "unknown-command", "missing-argument", "missing-table", "unknown-option", "extra-argument"],
)
def test_usage_error_exits_2(args):
    result = run(*args)
    assert result.exit_code == 2
    assert "Usage: handcue" in result.output
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------
# The real console script


def test_process_techniques_json():
    done = run_process("techniques", "--json")
    assert done.returncode == 0, done.stderr
    assert [row["id"] for row in json.loads(done.stdout)] == TECHNIQUE_IDS
    assert done.stderr == ""


def test_process_check_missing_file_exits_1_without_traceback(tmp_path):
    done = run_process("check", "missing.toml", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("error: missing.toml: no such file or shipped routine")
    assert "Traceback" not in done.stderr


def test_process_check_failing_routine(tmp_path):
    (tmp_path / "bad.toml").write_text(BAD_ROUTINE)
    done = run_process("check", "bad.toml", cwd=tmp_path)
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 3
    assert all(line.startswith("error: bad.toml: ") for line in done.stderr.splitlines())
    assert "Traceback" not in done.stderr


def test_process_compile_and_inspect_timeline(tmp_path):
    done = run_process("compile", "headache-li4", "-o", "li4.hcue", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = (tmp_path / "li4.hcue").read_bytes()
    assert data == compile_routine(load_routine("headache-li4"))
    shown = run_process("inspect", "li4.hcue", "--timeline", "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == [event.to_json() for event in table_timeline(decode_table(data))]


def test_process_usage_error_exits_2():
    done = run_process("compile", "nausea-pc6")
    assert done.returncode == 2
    assert "Missing option '-o' / '--output'" in done.stderr
    assert "Traceback" not in done.stderr


def test_help_imports_no_heavy_library_and_command_modules_do_not_import_the_cli():
    code = (
        "import sys\n"
        "import companion.cli_band, companion.cli_visual\n"
        "assert 'companion.cli' not in sys.modules, 'a command module imports the CLI group (an import cycle)'\n"
        "from companion.cli import cli\n"
        "try:\n"
        "    cli(['--help'], prog_name='handcue')\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0\n"
        "print(sorted(m for m in ('bleak', 'bumble', 'matplotlib', 'asyncio', 'construct') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
    assert "upload" in result.stdout and "plot" in result.stdout  # commands of both modules are on the group
