"""Smoke test of `python -m benchmarks`: every benchmark module runs its smallest configuration.

Only the structure of the results is checked here; timing claims belong to the
benchmarks (docs/performance.md), never to tests.
"""

from __future__ import annotations

import importlib

import pytest

from benchmarks import Report, Row
from benchmarks.__main__ import MODULES, main

SMALLEST = {
    "compactness": {"routines": ["nausea-pc6"]},
    "serial_upload": {"table_bytes": 512, "repeats": 1, "shipped": None},
    "ble_upload": {"intervals": (7.5,), "mtus": (247,), "table_bytes": 1024, "routine": None, "curve": (), "extras": False, "plot_path": None},
    "simulator": {"hours": 1, "repeats": 1, "realtime": ((2, 1),), "speed": 10.0},
    "companion_cli": {"startup_runs": 1, "step_counts": (10,), "largest": False, "repeats": 1},
    "cold_start": {"transports": ("serial",), "commands": ("upload", "upload --start"), "repeats": 1},
    "ble_pairing": {"repeats": 1},
    "ble_fleet": {"counts": (1, 2), "repeats": 1},
}


def check_report(report: Report, name: str) -> None:
    module = importlib.import_module(f"benchmarks.{name}")
    assert report.name == name and report.title == module.TITLE and report.method == module.METHOD
    assert report.rows and all(isinstance(row, Row) and row.metric and row.value for row in report.rows)
    assert all(row.met in (None, True, False) for row in report.rows)
    assert report.details


def test_every_module_has_a_smallest_configuration():
    assert set(SMALLEST) == set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_smallest_configuration(name):
    module = importlib.import_module(f"benchmarks.{name}")
    report = module.run(**SMALLEST[name])
    check_report(report, name)
    data = report.data
    if name == "compactness":
        [routine] = data["routines"]
        assert routine["routine"] == "nausea-pc6"
        assert 0 < routine["handcue"] < routine["handcue_names"]
        assert routine["handcue"] < routine["json"] and routine["handcue"] < routine["cbor"] and routine["handcue"] < routine["fit"]
        assert routine["fit"] < routine["fit_developer"] < routine["fit_developer_names"]  # more information, more bytes
        assert routine["fit_developer"] < routine["fit_described"] < routine["fit_described_names"]  # plus field names, units, scales
        for key, breakdown in routine["fit_breakdowns"].items():
            assert sum(breakdown["parts"].values()) == routine[key]
        assert sum(routine["handcue_breakdown"].values()) == routine["handcue_names"]
    elif name == "serial_upload":
        [upload] = data["uploads"]
        assert upload["bytes"] <= 512 and upload["frames"] >= 1 and upload["retransmissions"] == 0
        assert upload["up_bytes"] > upload["bytes"] and upload["down_bytes"] > 0 and upload["wall_s"] > 0
    elif name == "ble_upload":
        [config] = data["grid"]
        assert config["mtu"] == 247 and config["transport_mtu"] == 244 and config["interval_ms"] == 7.5
        [upload] = config["uploads"].values()
        windowed, stop_and_wait = upload["windowed"], upload["stop_and_wait"]
        assert upload["bytes"] <= 1024 and windowed["frames"] == stop_and_wait["frames"] and windowed["retransmissions"] == 0
        assert 1 <= windowed["max_in_flight"] <= config["window"] and stop_and_wait["max_in_flight"] == 0
        assert windowed["events"] > 0 and 0 < windowed["data_s"] < windowed["wall_s"]
    elif name == "simulator":
        assert [row[0] for row in data["virtual"]] == ["1 h, 1 cue/min", "1 h, 5 cues/min"]
        [onsets] = data["realtime"]["runs"]
        assert [cue for _, cue, _ in onsets["errors_ms"]] == ["tick", "done"]
        assert onsets["min"] <= onsets["p50"] <= onsets["p99"] <= onsets["max"]
    elif name == "companion_cli":
        assert len(data["startup"]["help_s"]) == len(data["startup"]["baseline_s"]) == 1
        [compiled] = data["compile"]
        assert compiled["steps"] == 10 and compiled["bytes"] > 0
    elif name == "cold_start":
        [phases] = data["runs"]["serial"]["upload"]
        from benchmarks.cold_start import AFTER, BEFORE, EXIT, FLOOR, INTERPRETER, NESTED, OTHER, SPAN, START, TOTAL

        # UPLOAD_BEGIN lies inside the data phase (the first data frames follow it without waiting for its answer).
        begin = f"data{NESTED}UPLOAD_BEGIN"
        assert 0 < phases["process start"] < phases["total"] and phases[begin] > 0 and "UPLOAD_COMMIT" in phases
        assert phases["data"] > phases[begin] and phases[SPAN] >= phases["data"] + phases["UPLOAD_COMMIT"]
        # Every millisecond in one row: the process start, the phases before and after the link, the link, the exit, other.
        assert {f"{BEFORE}: imports (companion CLI)", f"{BEFORE}: load and compile the routine", f"{AFTER}: disconnect"} <= set(phases)
        rows = sum(v for k, v in phases.items() if (k.startswith((f"{BEFORE}: ", f"{AFTER}: ")) and NESTED not in k) or k in (START, SPAN, EXIT, OTHER))
        assert abs(rows - phases[TOTAL]) < 1e-6 and phases[OTHER] >= 0
        floors = data["floors"]["serial"]
        assert 0 < floors[INTERPRETER] < floors[FLOOR]
        # upload --start: the same upload, then START on the same connection, its answer the last on the link.
        [started] = data["runs"]["serial"]["upload --start"]
        assert started["START"] > 0 and "UPLOAD_COMMIT" in started and "START" not in phases
        assert started[SPAN] >= started["data"] + started["UPLOAD_COMMIT"] + started["START"]
        assert any(row.metric == "serial: `handcue upload --start` cold" for row in report.rows)


def test_main_writes_the_report(tmp_path, capsys):
    output = tmp_path / "performance.md"
    assert main(["--only", "compactness", "--output", str(output)]) == 0
    text = output.read_text()
    assert "# Performance" in text and "## 1. Compactness" in text and "### Method" in text and "cores" in text
    assert "full-hand-massage: FIT+dev (same information, minimal)/HandCue" in capsys.readouterr().out


def test_cold_start_analysis_counts_every_millisecond_once():
    """A paired link's shape: encryption in no phase of its own inside the connect, a nested grandchild, a pairing
    read cancelled by the disconnect (reaching past the last answer), and two phases after the link that overlap."""
    from benchmarks.cold_start import AFTER, BEFORE, EXIT, NESTED, OTHER, REST, SPAN, START, TOTAL, analyse

    link = "connect to the known address"
    phases = [  # (name, start, end, id, parent, note), seconds since the probe's start
        ("imports (companion CLI)", 0.00, 0.03, 1, None, ""),
        ("imports (bleak, bumble)", 0.03, 0.30, 2, None, ""),
        (link, 0.30, 0.40, 3, None, ""),
        ("host power-on", 0.30, 0.31, 4, 3, ""),
        ("connect", 0.31, 0.33, 5, 3, ""),  # 0.33-0.36: the encryption, no phase of its own
        ("check cached GATT handles (Database Hash)", 0.36, 0.39, 6, 3, ""),
        ("read Database Hash", 0.37, 0.38, 7, 6, ""),
        ("INFO", 0.40, 0.43, 8, None, ""),
        ("STATUS", 0.40, 0.43, 9, None, ""),
        ("read pairing state (cancelled)", 0.40, 0.44, 10, None, ""),
        ("disconnect", 0.43, 0.45, 11, None, ""),
        ("close the event loop", 0.44, 0.46, 12, None, ""),
    ]
    record = {"started": 100.0, "exited": 100.48, "phases": [(n, 100.0 + a, 100.0 + b, i, p, note) for n, a, b, i, p, note in phases]}
    out = analyse(record, spawned=99.96, ended=100.50)
    assert out[TOTAL] == pytest.approx(0.54) and out[START] == pytest.approx(0.04) and out[EXIT] == pytest.approx(0.02)
    assert out[SPAN] == pytest.approx(0.13)
    # After the link (0.43 to 0.48): disconnect 0.43-0.45, the event loop only from 0.45, the cancelled read's tail nothing left.
    assert out[f"{AFTER}: disconnect"] == pytest.approx(0.02) and out[f"{AFTER}: close the event loop"] == pytest.approx(0.01)
    assert out[f"{AFTER}: read pairing state (cancelled)"] == pytest.approx(0.0) and out["read pairing state (cancelled)"] == pytest.approx(0.04)
    assert out[f"{BEFORE}: imports (companion CLI)"] == pytest.approx(0.03) and out[f"{BEFORE}: imports (bleak, bumble)"] == pytest.approx(0.27)
    partition = sum(v for k, v in out.items() if k.startswith((f"{BEFORE}: ", f"{AFTER}: ")) and NESTED not in k)
    assert out[OTHER] == pytest.approx(0.02)  # 0.46-0.48: in no phase
    assert out[START] + partition + out[SPAN] + out[EXIT] + out[OTHER] == pytest.approx(out[TOTAL])
    # Nested rows by their whole path; a parent's rows add up to it, the encryption in its rest.
    check = f"{link}{NESTED}check cached GATT handles (Database Hash)"
    assert out[f"{check}{NESTED}read Database Hash"] == pytest.approx(0.01) and out[f"{check}{NESTED}{REST}"] == pytest.approx(0.02)
    assert out[f"{link}{NESTED}{REST}"] == pytest.approx(0.04)  # 0.33-0.36 and 0.39-0.40
    children = [f"{link}{NESTED}{name}" for name in ("host power-on", "connect", "check cached GATT handles (Database Hash)", REST)]
    assert sum(out[key] for key in children) == pytest.approx(out[link])


def test_cold_start_sees_the_bond_in_the_companions_key_store(tmp_path):
    """The paired condition checks that `handcue pair` left a bond for the band (bumble's JSON key store layout)."""
    from benchmarks.cold_start import bonded

    bonds = tmp_path / "bonds.json"
    assert not bonded(bonds, "C8:4D:09:0F:04:DB")  # no file: no bond
    bonds.write_text('{"__DEFAULT__": {"C8:4D:09:0F:04:DB": {"address_type": 1, "ltk": {"value": "00"}}}}')
    assert bonded(bonds, "c8:4d:09:0f:04:db") and not bonded(bonds, "C8:4D:09:0F:04:DC")
