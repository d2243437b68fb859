"""Session history for people and tools (companion/history_export.py): times, the table, JSON, CSV, --since, FIT's refusals."""

from __future__ import annotations

import csv
import doctest
import io
import sys
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from companion import history_export
from companion.errors import ExportError
from companion.history_export import (
    duration_text,
    fit_activity,
    history_csv,
    history_json,
    history_table,
    parse_since,
    since_filter,
    start_text,
)
from protocol.constants import ClockKind, SessionOutcome
from protocol.history import Session

NOON_UTC = datetime(2025, 12, 2, 12, 0, tzinfo=UTC)


def session(clock: ClockKind, start: int, **fields) -> Session:
    values = dict(clock=clock, outcome=SessionOutcome.FINISHED, start=start, played_ms=605_000, paused_ms=0, routine_crc32=1, pauses=0,
                  skips=1, steps=3, iterations=7, routine_name="PC6")
    return Session(**{**values, **fields})


def test_durations_and_uptime_starts_read_as_clock_times():
    assert [duration_text(ms) for ms in (0, 59_999, 605_000, 3_723_000)] == ["0:00", "0:59", "10:05", "1:02:03"]
    assert start_text(session(ClockKind.UPTIME_MS, 3_723_456)) == "uptime +01:02:03"
    assert start_text(session(ClockKind.UPTIME_MS, 100 * 3_600_000)) == "uptime +100:00:00"


def test_the_docstring_examples_are_what_the_functions_return():
    failed, attempted = doctest.testmod(history_export)
    assert (failed, attempted >= 3) == (0, True)


def test_unix_starts_read_in_the_time_zone_asked_for():
    dated = session(ClockKind.UNIX_MS, int(NOON_UTC.timestamp() * 1000))
    assert start_text(dated, UTC) == "2025-12-02 12:00:00"
    assert start_text(dated, timezone(timedelta(hours=-5))) == "2025-12-02 07:00:00"


def test_table_columns_line_up_and_acks_show_given_of_asked():
    rows = history_table([session(ClockKind.UPTIME_MS, 0), session(ClockKind.UPTIME_MS, 1_000, routine_name="Headache relief (LI4)",
                                                                    outcome=SessionOutcome.STOPPED, acks_given=2, acks_missed=1)], UTC)
    header, first, second = rows.splitlines()
    assert header.index("routine") == first.index("PC6") == second.index("Headache")
    assert header.index("outcome") == first.index("finished") == second.index("stopped")
    assert first.endswith("-") and second.endswith("2/3")
    assert header.split()[:6] == ["started", "routine", "outcome", "played", "steps", "plays"]  # no dates: no zone to name
    assert first[header.index("steps"):].split()[:2] == ["3", "7"]


def test_table_header_names_the_zone_of_its_dates():
    at = int(NOON_UTC.timestamp() * 1000)
    five_behind = history_table([session(ClockKind.UNIX_MS, at), session(ClockKind.UPTIME_MS, 0)], timezone(timedelta(hours=-5)))
    header, dated, undated = five_behind.splitlines()
    assert header.startswith("started (UTC-05:00)  ")
    assert dated.startswith("2025-12-02 07:00:00  ") and undated.startswith("uptime +00:00:00  ")
    assert history_table([session(ClockKind.UNIX_MS, at)], UTC).startswith("started (UTC)  ")


def test_table_dates_across_a_daylight_saving_change_each_carry_their_offset():
    summer = int(datetime(2025, 7, 1, 12, 0, tzinfo=UTC).timestamp() * 1000)
    winter = int(NOON_UTC.timestamp() * 1000)
    header, july, december = history_table([session(ClockKind.UNIX_MS, summer), session(ClockKind.UNIX_MS, winter)],
                                           ZoneInfo("Europe/Berlin")).splitlines()
    assert header.startswith("started  ")
    assert july.startswith("2025-07-01 14:00:00 UTC+02:00  ") and december.startswith("2025-12-02 13:00:00 UTC+01:00  ")


def test_json_and_csv_name_the_band_and_give_utc_starts_to_the_millisecond():
    at = int(NOON_UTC.timestamp() * 1000)
    held = [session(ClockKind.UNIX_MS, at), session(ClockKind.UNIX_MS, at + 123), session(ClockKind.UPTIME_MS, 5)]
    data = history_json(held, 0x1A2B)
    assert data["band_id"] == "1A2B"
    assert [s["started"] for s in data["sessions"]] == ["2025-12-02T12:00:00.000Z", "2025-12-02T12:00:00.123Z", None]
    rows = list(csv.DictReader(io.StringIO(history_csv(held, 0x1A2B))))
    assert [(r["band_id"], r["started"]) for r in rows] == [("1A2B", "2025-12-02T12:00:00.000Z"), ("1A2B", "2025-12-02T12:00:00.123Z"), ("1A2B", "")]
    assert history_json(held, None)["band_id"] is None


def test_since_parses_iso_dates_and_keeps_only_dated_sessions_from_then():
    assert parse_since("2025-12-02T12:00Z") == NOON_UTC
    assert parse_since("2025-12-02") == datetime(2025, 12, 2).astimezone()  # no offset: this computer's local time
    with pytest.raises(ValueError, match="'last week' is not an ISO date"):
        parse_since("last week")
    at = int(NOON_UTC.timestamp() * 1000)
    held = [session(ClockKind.UPTIME_MS, at), session(ClockKind.UNIX_MS, at - 1), session(ClockKind.UNIX_MS, at), session(ClockKind.UNIX_MS, at + 1)]
    assert since_filter(held, NOON_UTC) == (held[2:], 1)


def test_fit_needs_a_dated_session_and_fit_tool():
    with pytest.raises(ExportError, match="no session has a date"):
        fit_activity([session(ClockKind.UPTIME_MS, 0)])
    with pytest.raises(ExportError, match="no sessions recorded"):
        fit_activity([])


def test_fit_without_fit_tool_names_the_install_command(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "fit_tool.fit_file_builder", None)  # as if fit-tool were not installed
    with pytest.raises(ExportError, match=r'pip install -e "\.\[fit\]"'):
        fit_activity([session(ClockKind.UNIX_MS, int(NOON_UTC.timestamp() * 1000))])
