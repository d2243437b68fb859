"""The phase recorder behind `handcue -v`: nesting (also across tasks), the printed tree, the time in no phase."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from companion.phases import Phases, imports


class Clock:
    """A clock the test moves by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def by_name(phases: Phases) -> dict[str, object]:
    return {phase.name: phase for phase in phases.recorded}


def test_a_phase_inside_another_is_its_child_and_is_printed_indented_under_it():
    clock = Clock()
    phases = Phases(clock)
    with phases.phase("connect to the known address"):
        clock.now = 0.010
        with phases.phase("connect"):
            clock.now = 0.025
        with phases.phase("check cached GATT handles"):
            clock.now = 0.055
    with phases.phase("INFO"):
        clock.now = 0.085
    named = by_name(phases)
    outer, inner = named["connect to the known address"], named["connect"]
    assert inner.parent == outer.id and named["check cached GATT handles"].parent == outer.id
    assert outer.parent is None and named["INFO"].parent is None
    assert phases.lines() == [
        "     0.0 ms +   55.0 ms  connect to the known address",
        "    10.0 ms +   15.0 ms    connect",
        "    25.0 ms +   30.0 ms    check cached GATT handles",
        "    55.0 ms +   30.0 ms  INFO",
    ]


def test_the_last_line_gives_the_time_no_top_level_phase_covers_counting_overlaps_and_children_once():
    clock = Clock()
    phases = Phases(clock)
    phases.add("imports", 0.0, 0.020)
    phases.add("subscribe", 0.030, 0.060)
    phases.add("INFO", 0.030, 0.070)  # overlaps subscribe: counted once
    clock.now = 0.075
    with phases.phase("disconnect"):
        clock.now = 0.080
        with phases.phase("close the host"):  # inside disconnect: not counted again
            clock.now = 0.085
    assert phases.top_level_seconds() == pytest.approx(0.020 + 0.040 + 0.010)
    assert phases.lines(until=0.100)[-1] == "   100.0 ms in all; 30.0 ms of it in no phase above (click parsing the arguments, the gaps between phases)"


def test_a_task_started_inside_a_phase_records_its_phases_under_it_and_a_note_is_printed():
    phases = Phases()

    async def background() -> None:
        with phases.phase("read pairing state"):
            await asyncio.sleep(0)

    async def job() -> None:
        with phases.phase("connect"):
            task = asyncio.ensure_future(background())
        outside = asyncio.ensure_future(background())
        await asyncio.gather(task, outside)
        phases.add("MTU exchange", 0.0, note="ATT MTU 247, asked by the peer")

    asyncio.run(job())
    connect = by_name(phases)["connect"]
    parents = sorted((phase.parent is None) for phase in phases.recorded if phase.name == "read pairing state")
    assert parents == [False, True]  # one under connect (started inside it), one top-level
    assert [phase.parent for phase in phases.recorded if phase.name == "read pairing state" and phase.parent is not None] == [connect.id]
    assert any(line.endswith("MTU exchange (ATT MTU 247, asked by the peer)") for line in phases.lines())


def test_a_cancelled_phase_says_so_and_a_failed_one_too():
    phases = Phases()

    async def job() -> None:
        async def waits() -> None:
            with phases.phase("read pairing state"):
                await asyncio.Event().wait()

        task = asyncio.ensure_future(waits())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(ValueError), phases.phase("connect"):
            raise ValueError("no")

    asyncio.run(job())
    assert [phase.name for phase in phases.recorded] == ["read pairing state (cancelled)", "connect (failed)"]


def test_an_import_phase_is_left_out_when_its_modules_are_imported_already():
    phases = Phases()
    assert "json" in sys.modules or __import__("json")
    with imports(phases, "imports (json)", "json"):
        pass
    with imports(phases, "imports (not yet)", "json", "companion_no_such_module"):
        pass
    assert [phase.name for phase in phases.recorded] == ["imports (not yet)"]


def test_phases_of_another_recorder_do_not_nest_under_this_ones():
    outer, inner = Phases(), Phases()
    with outer.phase("a command"), inner.phase("a library's own recording"):
        pass
    assert [phase.parent for phase in inner.recorded] == [None]


def test_a_one_command_process_loads_without_collector_passes_and_freezes_what_it_loaded():
    """After freeze_what_is_loaded (the console script's main), a loading phase runs with the cyclic collector
    paused and freezes what it made (bumble's modules are some 200 000 objects that live until the exit:
    traversing them cost a known band's status 40-70 ms); without it (tests running commands in process), the
    collector runs as usual and nothing is frozen."""
    code = (
        "import gc\n"
        "starts = []\n"
        "gc.callbacks.append(lambda phase, info: phase == 'start' and starts.append(info['generation']))\n"
        "from companion.phases import Phases, freeze_what_is_loaded, loading\n"
        "phases = Phases()\n"
        "with loading(phases, 'in process'):\n"
        "    made = [[i] for i in range(100_000)]\n"
        "print(len(starts) > 0, gc.get_freeze_count() == 0)\n"
        "freeze_what_is_loaded()\n"
        "frozen, starts[:] = gc.get_freeze_count(), []\n"
        "with loading(phases, 'imports (bleak, bumble)'):\n"
        "    loaded = [[i] for i in range(100_000)]\n"
        "print(starts == [], gc.get_freeze_count() >= frozen + 100_000, gc.isenabled())\n"
        "print([phase.name for phase in phases.recorded])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["True True", "True True True", "['in process', 'imports (bleak, bumble)']"]
