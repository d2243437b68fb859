"""Companion: `handcue --help` start-up time, and check + compile + write time by routine size."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from companion.compiler import compile_routine
from companion.routine import parse_routine
from protocol.constants import TABLE_RECORD_SIZE, Limits

from . import Report, Row, md_table, median

NAME = "companion_cli"
TITLE = "5. Companion"
TARGET_STARTUP_S = 0.3
TARGET_COMPILE_S = 0.5
STEP_COUNTS = (10, 100, 1000)
SUBPROCESS_TIMEOUT = 30.0

# Non-acupressure techniques with their article durations: no safety limit per point applies.
GENERATED_STEPS = (("warm_up", "45 s"), ("joystick", "90 s"), ("flex_extend", "10 s"), ("finger_squeeze", "15 s"), ("key_grip", "15 s"),
                   ("doorknob", "10 s"), ("handshake", "75 s"), ("palm_spread", "50 s"), ("combing", "45 s"))

METHOD = f"""\
**Start-up.** `handcue --help` as a subprocess, 10 runs, median (and min/max); the baseline is
`python -c pass` with the same interpreter, 10 runs. The command is the `handcue` console
script installed next to this interpreter (not the pyenv shell shim on `PATH`, which adds its
own start-up). Output goes to a pipe. Target: median under {TARGET_STARTUP_S} s. The import time of
`companion.cli` is broken down with `python -X importtime` (one run).

**Compile.** A routine TOML text is generated in memory with N top-level steps (the nine
non-acupressure techniques of the library in turn, with their article durations; one hand, so
each step compiles to one STEP record). Timed, in process: `companion.routine.parse_routine(text)`
(TOML parse, checks, safety rules) + `compile_routine(routine, names=True)` (model -> table ->
bytes, which validates the table again) + writing the bytes to a file in a temporary directory.
N = {", ".join(map(str, STEP_COUNTS))} and the largest the format allows: `Limits.MAX_RECORDS` = {Limits.MAX_RECORDS}
records, unless `Limits.MAX_TABLE_BYTES` = {Limits.MAX_TABLE_BYTES} binds first (computed from the size of a
compiled routine). 5 runs each (after one untimed warm-up run), median. *Per step* = median / N:
flat per-step times mean linear scaling. Target: the largest under {TARGET_COMPILE_S} s."""


# --------------------------------------------------------------------------- start-up


def handcue_command() -> list[str]:
    script = Path(sys.executable).with_name("handcue")
    if script.exists():
        return [str(script)]
    found = shutil.which("handcue")
    return [found] if found else [sys.executable, "-c", "from companion.cli import main; main()"]


def time_command(command: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True, timeout=SUBPROCESS_TIMEOUT)
        times.append(time.perf_counter() - start)
    return times


_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)")


def import_breakdown(module: str = "companion.cli", top: int = 5) -> tuple[float, list[tuple[str, float]]]:
    """Cumulative ms of ``import module`` and its slowest direct imports, from ``python -X importtime``.

    The interpreter's own start-up (``site`` and what it imports) is printed first and left out.
    """
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True, text=True,
                          check=True, timeout=SUBPROCESS_TIMEOUT)
    lines = [m for m in map(_IMPORT_LINE.match, done.stderr.splitlines()) if m]
    after_site = next((i + 1 for i, m in enumerate(lines) if m.group(4) == "site" and not m.group(3)), 0)
    total = 0.0
    children = []
    for match in lines[after_site:]:
        depth = len(match.group(3)) // 2
        if depth == 0 and match.group(4) == module:
            total = int(match.group(2)) / 1000
        elif depth == 1:
            children.append((match.group(4), int(match.group(2)) / 1000))
    return total, sorted(children, key=lambda item: -item[1])[:top]


# --------------------------------------------------------------------------- compile


def routine_text(steps: int) -> str:
    lines = [f'name = "Generated {steps} steps"', 'hands = "left"', 'finish = "done"', ""]
    for index in range(steps):
        technique, duration = GENERATED_STEPS[index % len(GENERATED_STEPS)]
        lines += ["[[steps]]", f'technique = "{technique}"', f'duration = "{duration}"', ""]
    return "\n".join(lines)


def compile_once(text: str, output: Path) -> tuple[float, int]:
    start = time.perf_counter()
    routine, diagnostics = parse_routine(text, "generated.toml")
    if routine is None:
        raise RuntimeError("generated routine does not check: " + "; ".join(str(d) for d in diagnostics if d.severity == "error"))
    data = compile_routine(routine, names=True)
    output.write_bytes(data)
    return time.perf_counter() - start, len(data)


def largest_step_count() -> tuple[int, str]:
    """Most top-level steps a table can hold, and which limit binds."""
    small = len(compile_routine(parse_routine(routine_text(len(GENERATED_STEPS)), "probe")[0], names=True))  # type: ignore[arg-type]
    fixed = small - len(GENERATED_STEPS) * TABLE_RECORD_SIZE
    by_bytes = (Limits.MAX_TABLE_BYTES - fixed) // TABLE_RECORD_SIZE
    if by_bytes < Limits.MAX_RECORDS:
        return by_bytes, "MAX_TABLE_BYTES"
    return Limits.MAX_RECORDS, "MAX_RECORDS"


def measure_compile(counts: list[int], repeats: int) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="handcue-bench-") as folder:
        output = Path(folder) / "routine.hcue"
        for count in counts:
            text = routine_text(count)
            compile_once(text, output)  # warm-up
            runs = [compile_once(text, output) for _ in range(repeats)]
            seconds = median([t for t, _ in runs])
            results.append({"steps": count, "bytes": runs[0][1], "runs_s": [t for t, _ in runs], "median_s": seconds, "per_step_us": seconds / count * 1e6})
    return results


def run(*, startup_runs: int = 10, step_counts: tuple[int, ...] = STEP_COUNTS, largest: bool = True, repeats: int = 5) -> Report:
    rows: list[Row] = []
    baseline = time_command([sys.executable, "-c", "pass"], startup_runs)
    command = handcue_command()
    help_times = time_command([*command, "--help"], startup_runs)
    help_median, base_median = median(help_times), median(baseline)
    rows.append(Row(f"`handcue --help` start-up, median of {startup_runs}", f"{help_median * 1000:.0f} ms (python -c pass: {base_median * 1000:.0f} ms)",
                    f"< {TARGET_STARTUP_S * 1000:.0f} ms", help_median < TARGET_STARTUP_S))
    counts = list(step_counts)
    binding = ""
    if largest:
        most, binding = largest_step_count()
        counts.append(most)
    compiled = measure_compile(counts, repeats)
    for r in compiled:
        is_largest = largest and r is compiled[-1]
        rows.append(Row(f"check+compile+write {r['steps']} steps{' (largest)' if is_largest else ''}",
                        f"{r['median_s'] * 1000:.1f} ms ({r['per_step_us']:.0f} µs/step)",
                        f"< {TARGET_COMPILE_S * 1000:.0f} ms" if is_largest else "", r["median_s"] < TARGET_COMPILE_S if is_largest else None))
    startup = [["`python -c pass`", *(f"{x * 1000:.0f} ms" for x in (median(baseline), min(baseline), max(baseline)))],
               [f"`{' '.join(Path(c).name for c in command)} --help`", *(f"{x * 1000:.0f} ms" for x in (help_median, min(help_times), max(help_times)))]]
    details = f"Start-up ({startup_runs} runs each):\n\n" + md_table(["command", "median", "min", "max"], startup)
    total, children = import_breakdown()
    details += (f"\n\n`python -X importtime -c 'import companion.cli'` (one run): `companion.cli` takes {total:.0f} ms cumulative; its slowest "
                "direct imports: " + ", ".join(f"`{name}` {ms:.0f} ms" for name, ms in children) + ".")
    details += "\n\nCheck + compile + write (names included):\n\n" + md_table(
        ["steps", "table bytes", "runs", "median", "per step"],
        [[r["steps"], r["bytes"], " / ".join(f"{t * 1000:.1f}" for t in r["runs_s"]) + " ms", f"{r['median_s'] * 1000:.1f} ms",
          f"{r['per_step_us']:.0f} µs"] for r in compiled])
    if largest:
        details += f"\n\nThe largest routine has {counts[-1]} steps: `Limits.{binding}` binds first ({compiled[-1]['bytes']} bytes of at most {Limits.MAX_TABLE_BYTES})."
    return Report(NAME, TITLE, METHOD, rows, details, data={"startup": {"baseline_s": baseline, "help_s": help_times}, "compile": compiled})
