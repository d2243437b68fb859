"""Session history for people and tools (companion/history_export.py): times, the table, --since, FIT's refusals."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest

from companion.errors import ExportError
from companion.history_export import (
    duration_text,
    fit_activity,
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
    assert "3/7" in first


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
