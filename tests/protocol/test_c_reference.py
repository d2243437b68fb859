"""The C reference (protocol/c/) held to the Python loader, the simulator and ``inspect --timeline``.

The C library is built here with the system C compiler (skipped, with the
reason, only when there is none).  ``hcue-run`` prints motor events in the
shape of ``handcue inspect --timeline --json``, one JSON line each; a batch mode
takes many tables in one process so thousands of mutants stay cheap.

Python references: the CLI (``handcue inspect --timeline --json``) for the
shipped routines, ``companion.read_table``/``table_timeline`` (what the CLI
calls) and the simulated band (``firmware_sim.band.Band`` on a virtual clock)
for everything, ``protocol.errors.TableFormatError.code`` for verdicts.

``HANDCUE_C_LONG=1`` runs the long version: more hypothesis examples, every bit
of every byte flipped, and valgrind over every mutant when it is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from companion import compile_routine, load_routine, read_table, table_timeline
from firmware_sim.band import Band
from firmware_sim.clock import VirtualClock
from firmware_sim.handler import ProtocolHandler
from firmware_sim.local import storage_with
from protocol.constants import SkipScope
from protocol.errors import BandError, TableFormatError
from protocol.framing import FrameParser, encode_frame

from ..companion.test_ack_views import ROUTINE as ACK_VIEWS_ROUTINE
from ..conftest import SHIPPED

C_DIR = Path(__file__).resolve().parents[2] / "protocol" / "c"
LONG = os.environ.get("HANDCUE_C_LONG", "") not in ("", "0")
WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
SANITIZERS = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
ALLOWED_INCLUDES = {"<stdint.h>", "<stddef.h>", "<stdbool.h>", "<string.h>", '"handcue.h"', '"handcue_frame.h"'}


def find_compiler() -> str | None:
    for name in (os.environ.get("CC", ""), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def compile_c(compiler: str, output: Path, *flags: str) -> None:
    sources = [str(C_DIR / name) for name in ("handcue.c", "handcue_frame.c", "hcue_run.c")]
    result = subprocess.run([compiler, *WARNINGS, *flags, "-o", str(output), *sources], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and not result.stderr, f"{compiler} {' '.join(flags)}:\n{result.stderr}"


@pytest.fixture(scope="session")
def compiler() -> str:
    found = find_compiler()
    if found is None:
        pytest.skip("no C compiler (cc, gcc or clang; or $CC) on PATH: the C reference cannot be built")
    return found


@pytest.fixture(scope="session")
def hcue_run(compiler, tmp_path_factory) -> Path:
    binary = tmp_path_factory.mktemp("c") / "hcue-run"
    compile_c(compiler, binary, "-O2")
    return binary


@pytest.fixture(scope="session")
def hcue_run_sanitized(compiler, tmp_path_factory) -> Path:
    binary = tmp_path_factory.mktemp("c-san") / "hcue-run-san"
    probe = subprocess.run([compiler, *SANITIZERS, "-x", "c", "-o", str(binary.with_name("probe")), "-"],
                           input="int main(void) { return 0; }\n", capture_output=True, text=True, timeout=60, check=False)
    if probe.returncode != 0 or subprocess.run([str(binary.with_name("probe"))], capture_output=True, check=False).returncode != 0:
        pytest.skip(f"{compiler} cannot build or run with -fsanitize=address,undefined here")
    compile_c(compiler, binary, *SANITIZERS)
    return binary


# --------------------------------------------------------------------------
# Running the C and the Python references


def batch_input(items: list[tuple[bytes, str]]) -> bytes:
    parts = []
    for table, script in items:
        encoded = script.encode()
        parts += [struct.pack("<I", len(table)), table, struct.pack("<I", len(encoded)), encoded]
    return b"".join(parts)


def run_batch(binary: Path, items: list[tuple[bytes, str]], *, check_only: bool = False, wrapper: list[str] | None = None,
              strength: int = 100) -> list[list[str]]:
    """Each item's output lines from one ``hcue-run --batch`` process (at cue ``strength`` %)."""
    mode = "--batch-check" if check_only else "--batch"
    result = subprocess.run([*(wrapper or []), str(binary), "--strength", str(strength), mode], input=batch_input(items), capture_output=True, timeout=600, check=False)
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 0, f"hcue-run {mode} exited {result.returncode}:\n{stderr[-3000:]}"
    assert "runtime error" not in stderr and "ERROR" not in stderr, stderr[-3000:]
    blocks: list[list[str]] = [[]]
    for line in result.stdout.decode().splitlines():
        if line == "%%":
            blocks.append([])
        else:
            blocks[-1].append(line)
    assert blocks[-1] == [] and len(blocks) == len(items) + 1
    return blocks[:-1]


C_TABLE_VERSIONS = (1, 2)
"""The table formats the C reference reads: 1, and 2 (acknowledgement, SPEC.md §12.10)."""


def python_verdict(data: bytes) -> str:
    """The Python loader's verdict as a band of the C reference's formats gives it."""
    try:
        read_table(data, versions=C_TABLE_VERSIONS)
    except TableFormatError as exc:
        return exc.code.name
    return "OK"


def python_timeline(data: bytes, strength: int = 100, ack_wait_ms: int | None = None) -> list[str]:
    """The analytic timeline; at acknowledgement points nobody presses, as in a run without an ``ack`` command."""
    return [json.dumps(event.to_json()) for event in table_timeline(read_table(data), strength, ack_wait_ms)]


def simulator_run(data: bytes, script: list[tuple[int, str]] = (), strength: int = 100) -> list[str]:
    """The simulated band on a virtual clock, driven as ``hcue-run --script`` drives the C."""
    clock = VirtualClock()
    band = Band(storage_with(data), clock)
    band.set_strength(strength)
    out: list[str] = []
    band.listeners.append(lambda e: out.append(json.dumps({k: v for k, v in e.items() if k != "event"})) if e["event"] == "motor" else None)

    def advance_to(t: int | None) -> None:
        while (deadline := band.next_deadline()) is not None and (t is None or deadline <= t):
            clock.set(deadline)
            band.process()
        if t is not None:
            clock.set(t)
            band.process()

    band.start()
    for t, command in script:
        advance_to(t)
        if command == "status":
            fields = band.status().to_json()
            del fields["battery"]
            out.append(json.dumps({"at_ms": t, **fields}))
            continue
        if command == "ack":
            if not band.acknowledge():  # the C answers BAD_STATE when nothing waits
                out.append(json.dumps({"at_ms": t, "command": command, "refused": "BAD_STATE"}))
            continue
        try:
            band.skip(SkipScope.STEP) if command == "skip-step" else getattr(band, command)()
        except BandError as exc:
            out.append(json.dumps({"at_ms": t, "command": command, "refused": exc.code.name}))
    advance_to(None)
    return out


def script_text(script: list[tuple[int, str]]) -> str:
    return "".join(f"{t} {command}\n" for t, command in script)


# --------------------------------------------------------------------------
# Tables: shipped, re-laid out, mutated


def shipped_tables() -> dict[str, bytes]:
    tables = {}
    for routine in SHIPPED:
        for names in (True, False):
            tables[f"{routine}{'' if names else '/no-names'}"] = compile_routine(load_routine(routine), names=names)
    return tables


def seal(data: bytes | bytearray, *, size: bool = True) -> bytes:
    """Fix up table_size (when ``size``) and the CRC after a mutation, so later checks are reached."""
    out = bytearray(data)
    if size and len(out) >= 14:
        out[12:14] = (len(out) & 0xFFFF).to_bytes(2, "little")
    if len(out) >= 8:
        out[4:8] = zlib.crc32(bytes(out[8:])).to_bytes(4, "little")
    return bytes(out)


def relayout(data: bytes, header_extra: int, record_extra: int) -> bytes:
    """The same table with a longer header and longer records (SPEC §3, forward compatibility)."""
    header_size, record_size = data[10], data[11]
    count = int.from_bytes(data[14:16], "little")
    records_end = header_size + count * record_size
    out = bytearray(data[:header_size]) + bytes(range(1, header_extra + 1))
    out[10], out[11] = header_size + header_extra, record_size + record_extra
    for i in range(count):
        out += data[header_size + i * record_size : header_size + (i + 1) * record_size] + b"\xA5" * record_extra
    return seal(out + data[records_end:])


def mutants(data: bytes, *, every_bit: bool = False) -> list[bytes]:
    """Truncated, flipped, resized and re-referenced variants of a valid table."""
    out: list[bytes] = []
    header_size, record_size = data[10], data[11]
    count = int.from_bytes(data[14:16], "little")
    pattern_count = data[20]
    for length in range(len(data)):  # truncated, raw and with size and CRC fixed up
        out += [data[:length], seal(data[:length])]
    out += [data + b"\x00", seal(data + b"\x00"), seal(data + b"\x01\x41")]  # trailing bytes
    masks = (0xFF, 0x01, 0x80) if not every_bit else (*(1 << bit for bit in range(8)), 0xFF)
    for position in range(len(data)):
        for mask in masks:
            flipped = bytearray(data)
            flipped[position] ^= mask
            out.append(bytes(flipped))
            if position >= 8:
                out.append(seal(flipped, size=position not in (12, 13)))
    for offset, values in (  # counts and sizes changed, CRC fixed up
        (9, [0x00, 0x01, 0x02, 0x03, 0x80, 0xFE]), (10, [0, 23, 25, 40, 255]), (11, [0, 15, 17, 32, 255]),
        (20, [0, pattern_count - 1, pattern_count + 1, 33, 255]), (21, [0, 1, 254, 255]), (22, [4, 255]),
        (23, [pattern_count, 0xFE]),
    ):
        for value in values:
            changed = bytearray(data)
            changed[offset] = value & 0xFF
            out.append(seal(changed))
    for delta in (-1, 1, 1025 - count, 0x10000 - count):
        changed = bytearray(data)
        changed[14:16] = ((count + delta) & 0xFFFF).to_bytes(2, "little")
        out.append(seal(changed))
    for total in (0, 1, int.from_bytes(data[16:20], "little") + 100, 0xFFFFFFFF):
        changed = bytearray(data)
        changed[16:20] = total.to_bytes(4, "little")
        out.append(seal(changed))
    for index in range(count):  # bad references and fields, record by record
        base = header_size + index * record_size
        for field_offset in range(1, 14):
            for value in (0, 1, 2, 3, 5, 6, 9, 10, pattern_count, 0xFE, 0xFF):
                changed = bytearray(data)
                changed[base + field_offset] = value
                out.append(seal(changed))
    return out


def with_name_section(data: bytes, names: list[bytes]) -> bytes:
    """``data`` with its name section replaced by ``names`` (length-prefixed, raw bytes)."""
    count, patterns, segments = int.from_bytes(data[14:16], "little"), data[20], data[21]
    end = data[10] + count * data[11] + 2 * patterns + 2 * segments
    out = bytearray(data[:end] + b"".join(bytes([len(n) & 0xFF]) + n for n in names))
    out[9] |= 0x01
    return seal(out)


def limit_tables(data: bytes) -> list[bytes]:
    """Tables that reach the LIMIT and BAD_NAMES checks, which single-byte mutants cannot."""
    header_size, record_size, patterns = data[10], data[11], data[20]
    records_end = header_size + int.from_bytes(data[14:16], "little") * record_size
    record = data[header_size : header_size + record_size]
    many = bytearray(data[:header_size] + record * 1025 + data[records_end:])
    many[14:16] = (1025).to_bytes(2, "little")
    step = struct.pack("<BBBBHHHBBBB", 1, 1, 0, 255, 0xFFFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF).ljust(16, b"\0")
    loops = b"".join(struct.pack("<BBBBH", 2, 0, 255, 0xFF, 4 - depth).ljust(16, b"\0") for depth in range(4))
    nested = bytearray(data[:header_size] + loops + step + data[records_end:])
    nested[9], nested[11], nested[14:16] = 0, 16, (5).to_bytes(2, "little")
    bad_utf8 = [b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"ok\xe2\x82", b"\x80"]
    return [
        seal(data + bytes(40_000 - len(data))),  # larger than 32768 bytes
        seal(many),  # 1025 records
        seal(nested),  # lasts longer than 2**32 - 1 ms
        with_name_section(data, [b"a" * 65] + [b""] * patterns),
        with_name_section(data, [b""] * patterns + [b"\xc3\xa9" * 33]),
        with_name_section(data, [b"a" * 64] + [b"\xe2\x82\xac" * 21] * patterns),  # longest names: accepted
        with_name_section(data, [b"x"] * patterns),  # one name short: runs past the end
        with_name_section(data, [b"x"] * (patterns + 1) + [b"\x05abc"]),
        *(with_name_section(data, [bad] + [b""] * patterns) for bad in bad_utf8),
    ]


# --------------------------------------------------------------------------
# Generated tables: bytes built here, field by field from SPEC, not with the Python encoder


@st.composite
def patterns_st(draw) -> list[tuple[int, int]]:
    segments = [(draw(st.integers(1, 100)), draw(st.integers(3, 30)))]
    for _ in range(draw(st.integers(0, 3))):
        segments += [(0, draw(st.integers(10, 20))), (draw(st.integers(1, 100)), draw(st.integers(3, 20)))]
    assume(sum(units for _, units in segments) <= 100)
    return segments


@st.composite
def generated_tables(draw, ack: bool = False) -> bytes:
    """A valid table built byte by byte from SPEC: format 1, or with ``ack`` format 2 with acknowledgement points."""
    hands = draw(st.integers(0, 3))
    hand_count = 2 if hands >= 2 else 1
    patterns = draw(st.lists(patterns_st(), min_size=1, max_size=5))
    ref = st.integers(0, len(patterns) - 1)
    opt_ref = ref | st.just(0xFF)
    records: list[bytes] = []

    def iterate_and_count(bound: set[int]) -> tuple[int, int]:
        iterate = draw(st.sampled_from([i for i in (0, 1, 2) if i == 0 or i not in bound]))
        if iterate == 1:
            return iterate, draw(st.integers(1, 5))
        if iterate == 2:
            return iterate, hand_count
        return iterate, draw(st.integers(1, 3))

    def emit(depth: int, bound: set[int]) -> int:
        total = 0
        for _ in range(draw(st.integers(1, 3))):
            if depth < 4 and len(records) < 30 and draw(st.booleans()):
                iterate, count = iterate_and_count(bound)
                position = len(records)
                records.append(b"")
                body_total = emit(depth + 1, bound | ({iterate} - {0}))
                body_count = len(records) - position - 1
                records[position] = struct.pack("<BBBBH", 2, iterate, count, draw(opt_ref), body_count)
                total += count * body_total
            else:
                iterate, count = iterate_and_count(bound)
                units = draw(st.integers(10, 300))
                tick = draw(st.just(0) | st.integers(10, units + 10))
                warn = draw(st.just(0) | st.integers(1, units - 1))
                start = draw(opt_ref)
                records.append(struct.pack(
                    "<BBBBHHHBBBB", 1, draw(st.integers(1, 12)), iterate, count, units, tick, warn,
                    start, draw(opt_ref), draw(ref) if tick else 0xFF, draw(ref) if warn else 0xFF,
                ) + (bytes([draw(st.sampled_from([0, 1, 1, 0xFF, 0xFE]))]) if ack and start != 0xFF else b""))
                total += count * units * 100
        return total

    total = emit(0, set())
    assume(total <= 30 * 60_000)
    with_names = draw(st.booleans())
    header_extra, record_extra = draw(st.sampled_from([(0, 0), (0, 0), (4, 0), (0, 4), (8, 16)]))
    flags = int(with_names) | draw(st.sampled_from([0, 0, 0x02, 0x80, 0xFE]))
    done = draw(opt_ref)
    if ack and done == 0xFF:
        flags &= ~0x02  # format 2: a waiting finish needs a done cue
    descriptors, segments, first = b"", b"", 0
    for pattern in patterns:
        descriptors += bytes([first, len(pattern)])
        segments += b"".join(bytes(segment) for segment in pattern)
        first += len(pattern)
    names = b""
    if with_names:
        for name in [draw(st.text(max_size=12))] + [draw(st.text(max_size=6)) for _ in patterns]:
            encoded = name.encode()[:64]
            assume(len(encoded) == len(name.encode()))
            names += bytes([len(encoded)]) + encoded
    header_size, record_size = 24 + header_extra, 16 + record_extra
    header = b"HCue" + b"\0\0\0\0" + bytes([2 if ack else 1, flags, header_size, record_size]) + struct.pack(
        "<HHIBBBB", 0, len(records), total, len(patterns), first, hands, done) + b"\x5A" * header_extra
    body = b"".join(record.ljust(record_size, b"\0") for record in records)
    return seal(header + body + descriptors + segments + names)


@st.composite
def scripts(draw, horizon_ms: int, ack: bool = False) -> list[tuple[int, str]]:
    times = sorted(draw(st.lists(st.integers(0, horizon_ms), min_size=1, max_size=8)))
    commands = st.sampled_from(["pause", "resume", "skip", "status", "pause", "skip-step", "skip", "stop", "start", "resume", "status"]
                               + ["ack", "ack", "status", "ack"] * ack)
    return [(t, draw(commands)) for t in times]


# --------------------------------------------------------------------------
# The library itself


def test_library_sources_use_only_the_allowed_headers_and_no_float_or_allocation():
    source = "".join((C_DIR / name).read_text() for name in ("handcue.c", "handcue.h", "handcue_frame.c", "handcue_frame.h"))
    includes = set(re.findall(r'#include\s+([<"][^>"]+[>"])', source))
    assert includes <= ALLOWED_INCLUDES, includes - ALLOWED_INCLUDES
    code = re.sub(r"/\*.*?\*/", "", source, flags=re.S)
    for word in ("float", "double", "malloc", "calloc", "realloc", "free"):
        assert not re.search(rf"\b{word}\b", code), f"the library uses {word}"


def test_builds_warning_free_at_os_and_reports_its_size(compiler, tmp_path):
    obj = tmp_path / "handcue.o"
    command = [compiler, *WARNINGS, "-Os", "-c", "-o", str(obj), str(C_DIR / "handcue.c")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and not result.stderr, result.stderr
    if shutil.which("size"):
        text = int(subprocess.run(["size", str(obj)], capture_output=True, text=True, check=True).stdout.splitlines()[1].split()[0])
        print(f"text of handcue.o at -Os with {compiler}: {text} bytes")
        assert 0 < text < 16 * 1024


def test_builds_warning_free_with_clang(tmp_path):
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed (gcc is checked by every other test)")
    compile_c("clang", tmp_path / "hcue-run", "-O2")
    command = ["clang", *WARNINGS, "-Os", "-c", "-o", str(tmp_path / "handcue.o"), str(C_DIR / "handcue.c")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and not result.stderr, result.stderr


def test_interpreter_ram_is_what_the_header_states(hcue_run):
    stated = int(re.search(r"#define HC_PLAYER_MAX_BYTES (\d+)u", (C_DIR / "handcue.h").read_text()).group(1))
    size = int(subprocess.run([str(hcue_run), "--sizeof"], capture_output=True, text=True, check=True).stdout)
    print(f"sizeof(hc_player) = {size} bytes here; stated bound {stated}")
    assert 0 < size <= stated


# --------------------------------------------------------------------------
# Timelines


@pytest.mark.parametrize("routine", SHIPPED)
def test_shipped_routine_c_equals_simulator_equals_inspect(hcue_run, routine, tmp_path):
    path = tmp_path / f"{routine}.hcue"
    path.write_bytes(compile_routine(load_routine(routine)))
    c_lines = subprocess.run([str(hcue_run), str(path)], capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    inspect = subprocess.run([sys.executable, "-c", "from companion.cli import main; main()", "inspect", "--timeline", "--json", str(path)],
                             capture_output=True, text=True, timeout=60, check=True)
    inspect_lines = [json.dumps(event, ensure_ascii=False) for event in json.loads(inspect.stdout)]
    assert c_lines  # a routine makes the motor run
    assert c_lines == inspect_lines  # byte for byte, line by line
    assert c_lines == simulator_run(path.read_bytes())


@pytest.mark.parametrize("strength", [20, 55, 70])
def test_cue_strength_scales_alike_in_c_simulator_and_inspect(hcue_run, strength, tmp_path):
    tables = shipped_tables()
    items = [(data, "") for data in tables.values()]
    for (data, _), lines in zip(items, run_batch(hcue_run, items, strength=strength), strict=True):
        assert lines == python_timeline(data, strength) == simulator_run(data, strength=strength)
        assert lines != python_timeline(data)  # the setting changed what the motor does
    path = tmp_path / "t.hcue"
    path.write_bytes(items[0][0])
    c_lines = subprocess.run([str(hcue_run), "--strength", str(strength), str(path)], capture_output=True, text=True, timeout=60, check=True).stdout
    inspect = subprocess.run([sys.executable, "-c", "from companion.cli import main; main()", "inspect", "--timeline", "--json",
                              "--strength", str(strength), str(path)], capture_output=True, text=True, timeout=60, check=True)
    assert c_lines.splitlines() == [json.dumps(event, ensure_ascii=False) for event in json.loads(inspect.stdout)]


@pytest.mark.parametrize("strength", ["19", "101", "7x"])
def test_c_refuses_a_strength_out_of_range(hcue_run, strength, tmp_path):
    path = tmp_path / "t.hcue"
    path.write_bytes(compile_routine(load_routine("nausea-pc6")))
    result = subprocess.run([str(hcue_run), "--strength", strength, str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout) == (2, "") and "--strength" in result.stderr


def test_rejected_table_exits_1_with_the_error_name(hcue_run, tmp_path):
    data = bytearray(compile_routine(load_routine("nausea-pc6")))
    data[-1] ^= 1
    path = tmp_path / "corrupt.hcue"
    path.write_bytes(bytes(data))
    result = subprocess.run([str(hcue_run), str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout, result.stderr.strip()) == (1, "", "BAD_CRC")
    assert python_verdict(bytes(data)) == "BAD_CRC"


ACK_ROUTINE = ACK_VIEWS_ROUTINE  # one acknowledgement routine for the views and the C cross-check


def ack_table() -> bytes:
    from companion.routine import checked, parse_routine

    return compile_routine(checked(*parse_routine(ACK_ROUTINE, "ack.toml")))


def test_acknowledgement_plays_alike_in_c_simulator_and_timeline(hcue_run, tmp_path):
    """Format 2: never pressed (the cap at every point), pressed 7 s after each first cue, and controls during the waits."""
    data = ack_table()
    assert data[8] == 2
    path = tmp_path / "ack.hcue"
    path.write_bytes(data)
    c_lines = subprocess.run([str(hcue_run), str(path)], capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    assert c_lines == python_timeline(data, ack_wait_ms=None) == simulator_run(data)
    assert len([line for line in c_lines if '"cue": "start", "pattern": 0, "step": 0' in line]) == 12  # the cue and 11 repeats
    pressed = [(7_000, "ack"), (7_000, "status"), (44_000, "status"), (44_000, "ack"), (44_000, "status")]
    [c_pressed] = run_batch(hcue_run, [(data, script_text(pressed))])
    assert c_pressed == simulator_run(data, pressed)
    assert [line for line in c_pressed if line.startswith('{"t_ms"')] == python_timeline(data, ack_wait_ms=7_000)
    controls = [(100, "ack"), (100, "ack"), (3_000, "pause"), (9_000, "ack"), (9_500, "status"), (20_000, "resume"),
                (31_000, "skip"), (31_000, "status"), (50_000, "skip-step"), (52_000, "skip"), (52_000, "status"), (60_000, "start"),
                (61_000, "stop"), (61_000, "status")]
    [c_controls] = run_batch(hcue_run, [(data, script_text(controls))])
    assert c_controls == simulator_run(data, controls)
    assert '{"at_ms": 100, "command": "ack", "refused": "BAD_STATE"}' in c_controls  # the second press: nothing waits


def test_c_refuses_an_unknown_format_with_bad_version(hcue_run):
    newer = bytearray(ack_table())
    newer[8] = 3
    [[verdict]] = run_batch(hcue_run, [(seal(newer), "")], check_only=True)
    assert verdict == python_verdict(seal(newer)) == "BAD_VERSION"


@settings(max_examples=300 if LONG else 60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(data=generated_tables(ack=True), script_data=st.data())
def test_generated_ack_tables_agree_in_c_simulator_and_timeline(hcue_run, data, script_data):
    assert python_verdict(data) == "OK"
    total = int.from_bytes(data[16:20], "little")
    script = script_data.draw(scripts(total + 2 * 60_000, ack=True))
    [c_plain, c_scripted] = run_batch(hcue_run, [(data, ""), (data, script_text(script))])
    assert c_plain == python_timeline(data, ack_wait_ms=None) == simulator_run(data)
    assert c_scripted == simulator_run(data, script)


@settings(max_examples=300 if LONG else 60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(data=generated_tables(ack=True), edits=st.lists(st.tuples(st.integers(8, 4096), st.integers(0, 255)), min_size=1, max_size=3))
def test_mutated_ack_tables_get_the_same_verdict(hcue_run, data, edits):
    changed = bytearray(data)
    for position, value in edits:
        changed[position % len(changed)] = value
    mutant = seal(changed)
    [[verdict]] = run_batch(hcue_run, [(mutant, "")], check_only=True)
    assert verdict == python_verdict(mutant)


def test_longer_header_and_records_play_the_same(hcue_run):
    items = []
    for data in shipped_tables().values():
        for extra in ((4, 0), (0, 8), (231, 239)):
            items.append((relayout(data, *extra), ""))
    for (data, _), lines in zip(items, run_batch(hcue_run, items), strict=True):
        assert lines == python_timeline(data) == simulator_run(data)


@settings(max_examples=300 if LONG else 60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(data=generated_tables())
def test_generated_tables_c_equals_simulator_equals_timeline(hcue_run, data):
    assert python_verdict(data) == "OK"
    [c_lines] = run_batch(hcue_run, [(data, "")])
    assert c_lines == python_timeline(data) == simulator_run(data)


# --------------------------------------------------------------------------
# Accept / reject


def test_mutated_tables_get_the_same_verdict_in_c_and_python(hcue_run):
    items = []
    for data in shipped_tables().values():
        items += mutants(data, every_bit=LONG) + limit_tables(data)
    verdicts = run_batch(hcue_run, [(m, "") for m in items], check_only=True)
    pairs = [(m, c, python_verdict(m)) for m, [c] in zip(items, verdicts, strict=True)]
    disagreements = [(m.hex(), c, p) for m, c, p in pairs if c != p]
    counts: dict[str, int] = {}
    for [verdict] in verdicts:
        counts[verdict] = counts.get(verdict, 0) + 1
    print(f"{len(items)} mutants cross-checked: {counts}")
    assert not disagreements[:5], f"{len(disagreements)} of {len(items)} disagree (table, C, Python): {disagreements[:5]}"
    assert len(counts) == 11  # OK and every TableError code: the mutants reach every check


@settings(max_examples=300 if LONG else 60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(data=generated_tables(), edits=st.lists(st.tuples(st.integers(8, 4096), st.integers(0, 255)), min_size=1, max_size=3), sealed=st.booleans())
def test_mutated_generated_tables_get_the_same_verdict(hcue_run, data, edits, sealed):
    changed = bytearray(data)
    for position, value in edits:
        changed[position % len(changed)] = value
    mutant = seal(changed) if sealed else bytes(changed)
    [[verdict]] = run_batch(hcue_run, [(mutant, "")], check_only=True)
    assert verdict == python_verdict(mutant)


# --------------------------------------------------------------------------
# Control


FIXED_SCRIPTS = {
    "pause and resume": [(40, "pause"), (5_000, "status"), (9_000, "resume"), (40_000, "status")],
    "skip while paused, then resume": [(1_000, "pause"), (2_000, "skip"), (2_000, "status"), (3_000, "resume"), (3_500, "status")],
    "skip to the end while paused": [(1_000, "pause"), (2_000, "skip"), (2_000, "skip-step"), (2_000, "skip-step"), (2_000, "skip-step"),
                                     (2_000, "skip-step"), (2_000, "status")],
    "skip each finger, then the step": [(136_000, "skip"), (136_000, "status"), (140_000, "skip"), (141_000, "skip-step"), (141_000, "status"),
                                        (150_000, "pause"), (151_000, "skip"), (151_000, "status"), (152_000, "resume"), (152_000, "skip-step")],
    "stop and start again": [(10_000, "stop"), (10_000, "status"), (12_000, "start"), (13_000, "skip"), (13_000, "status")],
    "refused commands": [(0, "resume"), (100, "stop"), (200, "pause"), (200, "skip"), (300, "start"), (400, "start")],
}


@pytest.mark.parametrize("name", sorted(FIXED_SCRIPTS))
def test_scripted_control_agrees_on_shipped_routines(hcue_run, name, tmp_path):
    script = FIXED_SCRIPTS[name]
    items = [(data, script_text(script)) for data in shipped_tables().values()]
    for (data, _), lines in zip(items, run_batch(hcue_run, items), strict=True):
        assert lines == simulator_run(data, script)
    path, script_path = tmp_path / "t.hcue", tmp_path / "cmds.txt"  # the same through the --script option
    path.write_bytes(items[0][0])
    script_path.write_text("# a comment line\n\n" + script_text(script))
    result = subprocess.run([str(hcue_run), "--script", str(script_path), str(path)], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.splitlines() == simulator_run(items[0][0], script)


@settings(max_examples=300 if LONG else 60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(data=generated_tables(), script_data=st.data())
def test_scripted_control_agrees_on_generated_tables(hcue_run, data, script_data):
    total = int.from_bytes(data[16:20], "little")
    script = script_data.draw(scripts(total + 2_000))
    strength = script_data.draw(st.sampled_from([100, 100, 20, 37, 64, 99]))
    [c_lines] = run_batch(hcue_run, [(data, script_text(script))], strength=strength)
    assert c_lines == simulator_run(data, script, strength)


# Found by hypothesis: a one-round loop around two 1 s steps, every cue pattern 0 (one 30 ms segment
# at 1 %), DONE silent.  Pause at 0, skip to step 2 (its START pattern waits for resume), skip again
# past the last record: the band goes to finished and the waiting START pattern plays out (SPEC
# 12.5, 12.6), so the motor must be driven for the segment reported, not left off.
SKIP_PAST_THE_END_WITH_A_PATTERN_WAITING = (
    b"HCue\xb7\xbf#\x96\x01\x00\x18\x10L\x00\x03\x00\xd0\x07\x00\x00\x01\x01\x00\xff\x02\x00\x01\x00\x02\x00\x00\x00"
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x01\x01\x00\x01\n\x00\x00\x00\x00\x00\x00\x00\xff\xff\x00\x00\x01\x01\x02\x01\n\x00"
    b"\x00\x00\x01\x00\x00\xff\xff\x00\x00\x00\x00\x01\x01\x03"
)


def test_skip_past_the_end_while_paused_plays_the_pattern_a_skip_left_waiting(hcue_run):
    data = SKIP_PAST_THE_END_WITH_A_PATTERN_WAITING
    script = [(0, "pause"), (0, "skip"), (0, "skip")]
    expected = ['{"t_ms": 0, "amplitude": 1, "duration_ms": 30, "cue": "start", "pattern": 0, "step": 2, "hand": "left", "finger": null}']
    [c_lines] = run_batch(hcue_run, [(data, script_text(script))])  # exit 3 if drive() disagrees with the segments
    assert c_lines == simulator_run(data, script) == expected


def test_skip_past_the_end_drives_the_waiting_pattern_at_the_scaled_strength(hcue_run):
    """Found by hypothesis: the motor switched on after a skip past the end took the unscaled amplitude."""
    data = (b"HCue\x96O\x13v\x01\x00\x18\x10,\x00\x01\x00\xe8\x03\x00\x00\x01\x01\x00\x00\x01\x01\x00\x01\n\x00"
            b"\x00\x00\x00\x00\xff\x00\xff\xff\x00\x00\x00\x01\x15\x03")
    script = [(0, "skip")]
    [c_lines] = run_batch(hcue_run, [(data, script_text(script))], strength=20)  # exit 3 if drive() disagrees with the segments
    assert c_lines == simulator_run(data, script, strength=20)


# --------------------------------------------------------------------------
# Memory safety


def test_no_sanitizer_error_on_any_mutant(hcue_run_sanitized):
    items = []
    for data in shipped_tables().values():
        items += [(m, "") for m in mutants(data, every_bit=LONG) + limit_tables(data)]
        items.append((data, script_text(FIXED_SCRIPTS["skip to the end while paused"])))
    run_batch(hcue_run_sanitized, items, check_only=True)
    run_batch(hcue_run_sanitized, items)  # accepted mutants are run to their end too


@pytest.mark.skipif(not LONG, reason="valgrind pass runs only with HANDCUE_C_LONG=1")
def test_no_valgrind_error_on_any_mutant(hcue_run):
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed")
    items = []
    for data in shipped_tables().values():
        items += [(m, "") for m in mutants(data)]
    run_batch(hcue_run, items, wrapper=["valgrind", "-q", "--error-exitcode=9"])


def test_zephyr_example_embeds_the_shipped_routine_it_names():
    header = (C_DIR / "examples" / "zephyr-drv2605" / "src" / "routine.h").read_text()
    embedded = bytes(int(value, 16) for value in re.findall(r"0x([0-9a-f]{2})", header.split("{", 1)[1]))
    assert embedded == compile_routine(load_routine("nausea-pc6"), names=False)


# --------------------------------------------------------------------------
# Frame receiver and request check (optional part, handcue_frame.c)


def c_frames(binary: Path, stream: bytes) -> tuple[list[tuple[bytes, tuple[int, ...]]], tuple[int, ...]]:
    out = subprocess.run([str(binary), "--frames"], input=stream, capture_output=True, timeout=60, check=True).stdout.decode().split("\n")
    messages = [(bytes.fromhex(line.split()[1] if len(line.split()) == 6 else ""), tuple(map(int, line.split()[-4:])))
                for line in out if line.startswith("MSG")]
    stats = next(tuple(map(int, line.split()[1:])) for line in out if line.startswith("STATS"))
    return messages, stats


message_st = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda version, kind, opcode, rid, body: bytes([version, kind, opcode, rid]) + body,
              st.sampled_from([1, 1, 1, 2, 0]), st.sampled_from([0, 0, 0, 1, 2, 3, 255]), st.integers(0, 12), st.integers(0, 255),
              st.binary(max_size=12) | st.binary(min_size=250, max_size=256)),
)
piece_st = st.one_of(
    message_st.map(encode_frame),
    st.tuples(message_st, st.integers(0, 400), st.integers(1, 255)).map(lambda m: bytes(  # a damaged frame
        b if i != m[1] % (len(encode_frame(m[0])) - 1) else b ^ m[2] for i, b in enumerate(encode_frame(m[0])))),
    st.binary(max_size=40),  # garbage, with or without delimiters
    st.just(b"\x00"),
    st.binary(min_size=255, max_size=600).map(lambda b: b.replace(b"\x00", b"\x01")),  # too long for the buffer
)


@settings(max_examples=300 if LONG else 60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(pieces=st.lists(piece_st, max_size=12))
def test_frame_receiver_and_request_check_match_the_band(hcue_run, pieces):
    stream = b"".join(pieces)
    parser = FrameParser()
    expected = parser.feed(stream)
    messages, stats = c_frames(hcue_run, stream)
    assert [m for m, _ in messages] == expected
    assert stats == (parser.stats.frames, parser.stats.bad_crc, parser.stats.bad_cobs, parser.stats.oversized)
    handler = ProtocolHandler(Band(storage_with(None), VirtualClock()))
    for message, (respond, status, opcode, request_id) in messages:
        response = handler.handle("link", message)
        assert (response is not None) == bool(respond), message.hex()
        if response is None:
            continue
        assert (response[2], response[3]) == (opcode, request_id)
        if status:
            assert response[4] == status, message.hex()
        else:  # passed 16.5 checks 1-5: only the opcode's own checks answer, and BEGIN of 0 bytes is BAD_REQUEST
            assert response[4] not in (1, 3) and (response[4] != 2 or message[2] == 2), message.hex()


@given(message=st.binary(max_size=700))
@settings(max_examples=100 if LONG else 30, deadline=None)
def test_frame_encoder_matches_python(hcue_run, message):
    result = subprocess.run([str(hcue_run), "--encode"], input=message, capture_output=True, timeout=60, check=True)
    assert bytes.fromhex(result.stdout.decode().strip()) == encode_frame(message)


def test_request_check_matches_the_band_on_every_header(hcue_run):
    """Every version x kind x opcode x body length a check of SPEC 16.5 looks at, in one stream."""
    messages = [bytes([version, kind, opcode, 0x42]) + bytes([1]) * body
                for version in (0, 1, 2) for kind in (0, 1, 2, 3) for opcode in range(19) for body in (0, 3, 4, 8, 9)]
    # PREVIEW: the body length must match its segment count (byte 2 of the body); 0 segments fails its own check (§17.12)
    messages += [bytes([1, 0, 17, 0x42, 70, 4, count]) + bytes([100, 8]) * pairs for count in (0, 1, 2, 9) for pairs in (0, 1, 2) if count or pairs]
    messages += [b"", b"\x01", b"\x01\x00\x06"]
    checked, _ = c_frames(hcue_run, b"".join(encode_frame(m) for m in messages))
    assert [m for m, _ in checked] == messages
    handler = ProtocolHandler(Band(storage_with(None), VirtualClock()))
    for message, (respond, status, opcode, request_id) in checked:
        response = handler.handle("link", message)
        assert (response is not None) == bool(respond), message.hex()
        if response is not None:
            assert response[2:4] == bytes([opcode, request_id]), message.hex()
            assert response[4] == status or (status == 0 and response[4] not in (1, 2, 3)), message.hex()


def test_no_sanitizer_error_in_the_frame_receiver(hcue_run_sanitized):
    stream = b"".join(encode_frame(bytes([1]) * n) + encode_frame(bytes(n)) for n in range(250, 262))
    stream += bytes([1]) * 1000 + b"\x00" + bytes([0xFF, 1, 1]) + b"\x00\x00"
    messages, stats = c_frames(hcue_run_sanitized, stream)
    parser = FrameParser()
    assert [m for m, _ in messages] == parser.feed(stream)
    assert stats == (parser.stats.frames, parser.stats.bad_crc, parser.stats.bad_cobs, parser.stats.oversized)


def test_a_table_whose_waits_would_overflow_routine_time_is_limit_in_c_and_python(hcue_run, tmp_path):
    """Routine time counts acknowledgement waits (u32 ms): 255 x 255 x 2 plays of a 1 s step that waits would reach
    7.8e9 ms if nobody pressed, though the table's own total (130 M ms) fits. Both readers refuse it as LIMIT."""
    from dataclasses import replace

    from protocol.constants import Iterate
    from protocol.table import LoopRecord, Table

    table = read_table(ack_table())
    step = replace(table.records[0], duration_ms=1_000, tick_every_ms=0, tick_pattern=None, count=2)
    records = [LoopRecord(Iterate.NONE, 255, 2), LoopRecord(Iterate.NONE, 255, 1), step]
    content = dict(header=dict(hands=int(table.hands), done_pattern=table.done_pattern), records=records, patterns=table.patterns,
                   name=table.name, with_names=False, done_ack=False)
    data = bytes(Table.build(content))
    path = tmp_path / "waits.hcue"
    path.write_bytes(data)
    result = subprocess.run([str(hcue_run), str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stderr.strip()) == (1, "LIMIT")
    assert python_verdict(data) == "LIMIT"
    without_ack = bytes(Table.build({**content, "records": [*records[:2], replace(step, ack=False)]}))
    assert python_verdict(without_ack) == "OK"  # the same table without waits is fine
