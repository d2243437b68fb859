"""``python -m benchmarks [--quick] [--only NAME,...] [--output PATH | --no-write]``: run, print, write docs/performance.md."""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import DOC_PATH, REPO, Report, md_table

MODULES = ("compactness", "serial_upload", "ble_upload", "simulator", "companion_cli", "cold_start", "ble_pairing", "ble_fleet")


def machine() -> dict[str, str]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu or platform.processor() or "unknown",
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def configs(quick: bool) -> dict[str, dict[str, object]]:
    return {"simulator": {"speed": 4.0 if quick else 1.0}}


def summary_table(reports: list[Report]) -> str:
    rows = [[report.title, row.metric, row.value, row.target, row.verdict] for report in reports for row in report.rows]
    return md_table(["benchmark", "metric", "value", "target", "verdict"], rows, "lllll")


def console_table(reports: list[Report]) -> str:
    rows = [(report.title, row.metric, row.value, row.target, row.verdict) for report in reports for row in report.rows]
    widths = [max(len(str(r[i])) for r in [("benchmark", "metric", "value", "target", "verdict"), *rows]) for i in range(5)]
    lines = []
    for index, r in enumerate([("benchmark", "metric", "value", "target", "verdict"), *rows]):
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def revision() -> str:
    """The commit measured, and whether tracked files had uncommitted changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=REPO, capture_output=True, timeout=10).returncode != 0
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit} (plus uncommitted changes to tracked files)" if dirty else commit


def load() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def document(reports: list[Report], info: dict[str, str], started: datetime.datetime, seconds: float, argv: list[str]) -> str:
    missed = [(report, row) for report in reports for row in report.rows if row.met is False]
    met = [(report, row) for report in reports for row in report.rows if row.met is True]
    command = " ".join(["python -m benchmarks", *argv])
    parts = [
        "# Performance",
        "",
        f"Written by `{command}` on {started:%Y-%m-%d %H:%M} UTC at commit {info['revision']}; the whole run took {seconds:.0f} s. "
        "Do not edit by hand: run the benchmarks again.",
        "",
        f"**All figures are ratios or distributions from one run on this machine** ({info['cores']} cores, {info['cpu']}; "
        f"`{info['platform']}`; {info['python']}). They are not promises for other hardware: absolute times vary with the "
        "machine and its load (the tables list every run, which shows the spread); byte counts and round trips do not. "
        f"Load average (1/5/15 min) at the start: {info['load_start']}, at the end: {info['load_end']}; "
        "other jobs may have shared the machine during the run.",
        "",
        "## Summary",
        "",
        summary_table(reports),
        "",
        f"Targets met: {len(met)}; missed: {len(missed)}"
        + ("." if not missed else ": " + "; ".join(f"{report.title.split('. ', 1)[-1]}: {row.metric} = {row.value} (target {row.target})"
                                                    for report, row in missed) + "."),
    ]
    for report in reports:
        parts += ["", f"## {report.title}", "", "### Method", "", report.method, "", "### Results", "", report.details]
        if report.notes:
            parts += [""] + [f"* {note}" for note in report.notes]
    parts += ["", "## Reproduce", "", "```sh",
              'pip install -e ".[bench]"                          # fit-tool, cbor2',
              "python -m benchmarks                               # all, about 5 minutes; --quick: real-time tests at 4x",
              "python -m benchmarks --only ble_upload --no-write  # one benchmark, print only",
              "python -m benchmarks.cold_start --repeats 1        # the cold start alone, print only (--transports ble-known-paired,...)",
              "python -m pytest tests/test_benchmarks_smoke.py    # smallest configuration of each benchmark, no timing claims",
              "```", ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="Real-time cue tests at speed 4 (23 s instead of 90 s).")
    parser.add_argument("--only", help=f"Comma-separated subset of: {', '.join(MODULES)}.")
    parser.add_argument("--output", type=Path, default=DOC_PATH, help="Markdown report to write (default: docs/performance.md).")
    parser.add_argument("--no-write", action="store_true", help="Print only; do not write the report.")
    args = parser.parse_args(argv)
    names = MODULES if not args.only else tuple(n.strip() for n in args.only.split(","))
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    info = machine()
    info["load_start"] = load()
    info["revision"] = revision()
    print(f"{info['platform']}; {info['python']}; {info['cores']} cores ({info['cpu']})", flush=True)
    started = datetime.datetime.now(datetime.UTC)
    begin = time.perf_counter()
    reports: list[Report] = []
    options = configs(args.quick)
    for name in names:
        module = importlib.import_module(f".{name}", __package__)
        run: Callable[..., Report] = module.run
        print(f"running {module.TITLE} ...", flush=True)
        step = time.perf_counter()
        reports.append(run(**options.get(name, {})))
        print(f"  done in {time.perf_counter() - step:.1f} s", flush=True)
    seconds = time.perf_counter() - begin
    info["load_end"] = load()
    print()
    print(console_table(reports))
    for report in reports:
        for note in report.notes:
            print(f"note ({report.name}): {note}")
    print(f"\ntotal {seconds:.0f} s")
    if not args.no_write:
        used = sys.argv[1:] if argv is None else argv
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(document(reports, info, started, seconds, used), encoding="utf-8")
        shown = args.output.resolve().relative_to(REPO) if args.output.resolve().is_relative_to(REPO) else args.output
        print(f"wrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
