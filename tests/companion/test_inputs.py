"""Tables and routines told apart by content, and ``-`` for standard input and output (issue 12, point 4)."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from companion import compile_routine, load_routine
from companion.cli import cli
from companion.tables import load_table_or_routine

PC6 = compile_routine(load_routine("nausea-pc6"))
ROUTINE = 'name = "Bom"\n[[steps]]\ntechnique = "combing"\n'


def run(*args: str, input: bytes | None = None):
    return CliRunner().invoke(cli, list(args), input=input)


def test_a_table_is_a_table_whatever_its_name(tmp_path: Path):
    disguised = tmp_path / "pc6.toml"
    disguised.write_bytes(PC6)
    assert load_table_or_routine(disguised) == PC6
    result = run("inspect", "--json", str(disguised))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("command", ["check", "compile", "card"])
def test_a_table_given_where_a_routine_is_needed_says_so(tmp_path: Path, command: str):
    table = tmp_path / "pc6.hcue"
    table.write_bytes(PC6)
    extra = {"check": [], "compile": ["-o", str(tmp_path / "out.hcue")], "card": ["-o", str(tmp_path / "c.md")]}[command]
    result = run(command, str(table), *extra)
    assert result.exit_code == 1
    assert f"error: {table} is a compiled table; use inspect or upload" in result.output
    assert "TOML" not in result.output


@pytest.mark.parametrize("command", ["check", "inspect"])
def test_neither_routine_nor_table_says_so(tmp_path: Path, command: str):
    junk = tmp_path / "x.bin"
    junk.write_bytes(b"\x00\xff\xfe binary \x80\x81")
    result = run(command, str(junk))
    assert result.exit_code == 1
    assert f"error: {junk} is neither a routine (UTF-8 TOML) nor a table" in result.output


def test_a_truncated_table_names_its_file(tmp_path: Path):
    truncated = tmp_path / "cut.hcue"
    truncated.write_bytes(PC6[:40])
    result = run("inspect", str(truncated))
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {truncated}: ")


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + ROUTINE.encode())
    assert load_routine(path).name == "Bom"
    assert run("check", str(path)).exit_code == 0


def test_dash_reads_routines_and_tables_from_stdin():
    result = run("check", "-", input=ROUTINE.encode())
    assert result.exit_code == 0, result.output
    assert result.output.startswith("<stdin>: ok: Bom")
    table = run("inspect", "--json", "-", input=PC6)
    assert table.exit_code == 0, table.output
    assert f"0x{zlib.crc32(PC6):08X}" in table.output


def test_dash_output_writes_the_table_to_stdout():
    runner = CliRunner(mix_stderr=False) if "mix_stderr" in CliRunner.__init__.__code__.co_varnames else CliRunner()
    result = runner.invoke(cli, ["compile", "nausea-pc6", "-o", "-"])
    assert result.exit_code == 0
    assert result.stdout_bytes == PC6
    assert "wrote standard output: 124 bytes" in result.stderr


def test_dash_output_writes_a_markdown_card_to_stdout():
    result = run("card", "nausea-pc6", "-o", "-")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("# Nausea relief (PC6)\n")
