"""Simulator: virtual-time speed of a 24 h routine, cue onset error on the real-time clock, and how fast a table is checked."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from firmware_sim.band import Band
from firmware_sim.clock import RealClock, VirtualClock
from firmware_sim.interpreter import RunState
from firmware_sim.local import storage_with
from protocol.table import decode_table

from . import Report, Row, md_table, median, percentile
from .tables import day_table, metronome_table, records_table

NAME = "simulator"
TITLE = "4. Simulator"
TARGET_VIRTUAL_S = 1.0
REALTIME = ((60, 2), (30, 10))
DECODE_RECORDS = 1024
"""Real-time runs: (routine seconds, seconds between cues)."""

METHOD = f"""\
**Virtual time.** A 24 h table built with `protocol.table`: `LOOP 24 x (LOOP 60 x STEP 60 s)`,
the loops with a round cue. Variant *1 cue/min*: the step has only its start cue, so one cue a
minute (the round cue of the inner loop wins over the step's start, §12.4 of the SPEC); variant
*5 cues/min*: the step also ticks every 15 s and warns 5 s before its end (start, 3 ticks,
warning). The table is stored through the storage upload path and run by
`firmware_sim.band.Band` on `firmware_sim.clock.VirtualClock` exactly like `run_to_end` in
`tests/conftest.py` (`clock.set(next_deadline); band.process()` until no deadline is left), with
one listener counting the band's events. Timed (wall clock, and process CPU time, which a
shared machine disturbs less) from `band.start()` to the end; several runs, median reported.
Speed = routine seconds per wall second. Target: each 24 h run under {TARGET_VIRTUAL_S:g} s.

**Real time.** A {REALTIME[0][0]} s table (one step with a tick every {REALTIME[0][1]} s: a start cue, ticks, and DONE at
{REALTIME[0][0]} s) run by `Band` on `RealClock(speed)` with `band.run()` as an asyncio task, as
`handcue-sim` does; then the same with a cue every {REALTIME[1][1]} s over {REALTIME[1][0]} s, to see whether the
error depends on the time between cues. A listener on `band.listeners` takes `time.monotonic()`
at every `cue` event and compares it with the ideal instant of that cue, `clock origin + (band
origin + t_ms) / 1000 / speed` (the band's own mapping of routine time to the clock). Error =
actual - ideal, in wall milliseconds (positive = late). The start cue is left out: it fires
inside `band.start()` itself, so every cue reported was scheduled through the clock. At speed 1
this takes {sum(seconds for seconds, _ in REALTIME)} s of wall time; `--quick` uses speed 4. No target; p50, p99 and max
reported (with {REALTIME[0][0] // REALTIME[0][1]} cues, p99 is close to the max). *p50 / wall gap* relates the median
error to the wall time between two cues.

**Table check.** Before a band stores or runs a table it checks every byte (`protocol.table.decode_table`,
which the band's commit and boot call). Timed on the compiled `full-hand-massage` (names on) and on a
table of {DECODE_RECORDS} STEP records (the format's limit, no names): batches of decodes timed by process CPU time, best
batch reported as µs per decode (the least disturbed by other load). No target; the figure to keep is that it does not grow."""


def run_virtual(data: bytes) -> dict[str, Any]:
    clock = VirtualClock()
    band = Band(storage_with(data), clock)
    counts: dict[str, int] = {}
    band.listeners.append(lambda event: counts.__setitem__(event["event"], counts.get(event["event"], 0) + 1))
    start, cpu_start = time.perf_counter(), time.process_time()
    band.start()
    while (deadline := band.next_deadline()) is not None:
        clock.set(deadline)
        band.process()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    assert band.interpreter is not None and band.interpreter.state == RunState.FINISHED
    return {"wall_s": wall, "cpu_s": cpu, "routine_ms": band.routine_ms(), "cues": counts.get("cue", 0), "motor": counts.get("motor", 0),
            "events": sum(counts.values())}


HOTSPOTS = (
    ("firmware_sim/interpreter.py", "pattern_segments"),
    ("protocol/timeline.py", "to_json"),
    ("firmware_sim/interpreter.py", "record"),
    ("firmware_sim/interpreter.py", "position"),
)


def profile_hotspots(data: bytes) -> tuple[float, list[tuple[str, int, float]]]:
    """One profiled virtual run: (profiled total s, [(function, calls, share of the total)]) for :data:`HOTSPOTS`."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    run_virtual(data)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = max(entry[3] for entry in stats.values())
    found = []
    for suffix, function in HOTSPOTS:
        for (filename, _, name), (_, calls, _, cumulative, _) in stats.items():
            if name == function and filename.replace("\\", "/").endswith(suffix):
                found.append((f"{suffix.split('/')[-1].removesuffix('.py')}.{function}", calls, cumulative / total))
    return total, found


def decode_cost(data: bytes, batches: int = 7, batch_s: float = 0.1) -> float:
    """Best CPU seconds per ``decode_table(data)`` over ``batches`` batches of about ``batch_s`` each."""
    start = time.process_time()
    decode_table(data)
    number = max(1, int(batch_s / max(time.process_time() - start, 1e-6)))
    best = float("inf")
    for _ in range(batches):
        start = time.process_time()
        for _ in range(number):
            decode_table(data)
        best = min(best, (time.process_time() - start) / number)
    return best


async def _run_realtime(data: bytes, total_ms: int, speed: float) -> list[tuple[int, str, float]]:
    clock = RealClock(speed)
    band = Band(storage_with(data), clock)
    errors: list[tuple[int, str, float]] = []
    done = asyncio.Event()

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] != "cue":
            return
        now = time.monotonic()
        ideal = clock._origin + (band._origin + event["t_ms"]) / 1000 / speed
        errors.append((event["t_ms"], event["cue"], now - ideal))
        if event["cue"] == "done":
            done.set()

    band.listeners.append(on_event)
    runner = asyncio.create_task(band.run())
    try:
        band.start()
        await asyncio.wait_for(done.wait(), total_ms / 1000 / speed + 10)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    return errors


def run(*, hours: int = 24, repeats: int = 3, realtime: tuple[tuple[int, int], ...] = REALTIME, speed: float = 1.0, decode_batches: int = 7) -> Report:
    from companion import compile_routine, load_routine

    rows: list[Row] = []
    virtual = []
    for label, ticks in (("1 cue/min", False), ("5 cues/min", True)):
        data, total_ms = day_table(hours, ticks=ticks)
        runs = [run_virtual(data) for _ in range(repeats)]
        wall = median([r["wall_s"] for r in runs])
        assert runs[0]["routine_ms"] >= total_ms
        speedup = total_ms / 1000 / wall
        cpu = median([r["cpu_s"] for r in runs])
        virtual.append([f"{hours} h, {label}", len(data), runs[0]["cues"], runs[0]["motor"], runs[0]["events"],
                        " / ".join(f"{r['wall_s'] * 1000:.0f}" for r in runs) + " ms", f"{wall * 1000:.0f} ms", f"{cpu * 1000:.0f} ms",
                        f"{speedup:,.0f}x", f"{wall / runs[0]['events'] * 1e6:.0f} µs"])
        target = hours == 24
        rows.append(Row(f"virtual {hours} h ({label}): wall time, median of {repeats}", f"{wall * 1000:.0f} ms ({speedup:,.0f} routine s per s)",
                        f"< {TARGET_VIRTUAL_S:g} s" if target else "", wall < TARGET_VIRTUAL_S if target else None))
    heavy, _ = day_table(hours, ticks=True)
    profiled_s, hotspots = profile_hotspots(heavy)
    onsets = []
    for seconds, every in realtime:
        data, total_ms = metronome_table(seconds, every)
        errors = asyncio.run(_run_realtime(data, total_ms, speed))[1:]  # the start cue fires inside band.start(): not scheduled
        late = [e * 1000 for _, _, e in errors]
        stats: dict[str, Any] = {"seconds": seconds, "every_s": every, "cues": len(errors), "min": min(late), "mean": sum(late) / len(late),
                 "p50": percentile(late, 50), "p90": percentile(late, 90), "p99": percentile(late, 99), "max": max(late),
                 "early": sum(1 for x in late if x < 0), "errors_ms": [(t, cue, e * 1000) for t, cue, e in errors]}
        onsets.append(stats)
        rows.append(Row(f"real time x{speed:g}, cue every {every} s ({len(errors)} cues): onset error p50 / p99 / max",
                        f"{stats['p50']:.2f} / {stats['p99']:.2f} / {stats['max']:.2f} ms"))
    decodes = []
    for label, data in (("full-hand-massage", compile_routine(load_routine("full-hand-massage"))), (f"{DECODE_RECORDS} records", records_table(DECODE_RECORDS))):
        cost = decode_cost(data, decode_batches)
        decodes.append({"table": label, "bytes": len(data), "us": cost * 1e6})
        rows.append(Row(f"table check (decode_table), {label}, {len(data)} bytes: CPU per decode, best batch", f"{cost * 1e6:,.0f} µs"))
    details = ("Virtual time (every run's wall time, then the median wall and process CPU time; speed = routine time / median wall time; "
               "*per event* = median wall time / events):\n\n")
    details += md_table(["routine", "table bytes", "cues", "motor events", "events", "runs (wall)", "median wall", "median CPU", "speed", "per event"],
                        virtual)
    shares = ", ".join(f"`{name}` {share:.0%} ({calls} calls)" for name, calls, share in hotspots)
    details += (f"\n\nWhere the time of the {hours} h, 5 cues/min run goes (one run under cProfile, {profiled_s:.2f} s with profiling; share of "
                f"the run's time spent inside each function and what it calls, calls): {shares}.")
    details += f"\n\nReal time on `RealClock(speed={speed:g})`, onset error in wall ms (negative = early):\n\n" + md_table(
        ["routine", "cue every", "cues", "min", "mean", "p50", "p90", "p99", "max", "early", "p50 / wall gap"],
        [[f"{o['seconds']} s", f"{o['every_s']} s", o["cues"], *(f"{o[k]:.2f}" for k in ("min", "mean", "p50", "p90", "p99", "max")), o["early"],
          f"{o['p50'] / (o['every_s'] * 1000 / speed) * 1000:.2f} ‰"] for o in onsets])
    details += "\n\nTable check (`decode_table`), CPU time per decode, best of the batches:\n\n" + md_table(
        ["table", "bytes", "per decode"], [[d["table"], d["bytes"], f"{d['us']:,.0f} µs"] for d in decodes])
    return Report(NAME, TITLE, METHOD, rows, details,
                  data={"virtual": virtual, "realtime": {"speed": speed, "runs": onsets}, "decode": decodes})
