"""Session history for people and other tools: a table, JSON, CSV and FIT activity files.

The records come from the band (:meth:`companion.client.BandClient.history`) as
:class:`protocol.history.Session`.  A record's ``start`` is a date only when
the band's clock was set (``clock`` = Unix time, SET_TIME); otherwise it is the
band's uptime, shown as ``uptime +HH:MM:SS`` and left out of date filters and
FIT files, which need dates.  The table shows dates in local time (the zone in
its header); JSON and CSV in UTC (ISO 8601 to the millisecond, ``Z``), beside
the band's id so exports of several bands can be merged.

FIT files are written with fit-tool (the ``fit`` extra), imported only when one
is written: one FIT session (with its lap, timer events and two records) per
HandCue session, ``sport`` training / ``sub_sport`` flexibility training, and
developer fields for what FIT has no field for (routine name and CRC, outcome,
steps, iterations, pauses, skips, acknowledgements).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from protocol.constants import ClockKind
from protocol.history import Session

from .errors import ExportError


def started_at(session: Session) -> datetime | None:
    """When ``session`` started (UTC), or None when the band's clock was not set (its start is uptime)."""
    if session.clock != ClockKind.UNIX_MS:
        return None
    return datetime.fromtimestamp(session.start / 1000, tz=UTC)


def duration_text(ms: int) -> str:
    """A time played, as people read one: ``1:02:03``, under an hour ``2:03``.

    >>> duration_text(3_723_000), duration_text(123_000)
    ('1:02:03', '2:03')
    """
    hours, rest = divmod(ms // 1000, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def uptime_text(ms: int) -> str:
    """A start the band counted from its boot (its clock was not set), hours in at least two digits.

    >>> uptime_text(3_723_456), uptime_text(100 * 3_600_000)
    ('uptime +01:02:03', 'uptime +100:00:00')
    """
    hours, rest = divmod(ms // 1000, 3600)
    return f"uptime +{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def offset_text(offset: timedelta | None) -> str:
    """A UTC offset as people read one.

    >>> offset_text(timedelta(hours=1)), offset_text(timedelta(hours=-5, minutes=-30)), offset_text(timedelta(0))
    ('UTC+01:00', 'UTC-05:30', 'UTC')
    """
    minutes = int((offset or timedelta(0)).total_seconds()) // 60
    if not minutes:
        return "UTC"
    sign, minutes = ("+", minutes) if minutes > 0 else ("-", -minutes)
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def start_text(session: Session, tz: tzinfo | None = None, *, with_offset: bool = False) -> str:
    """The start for people: the date and time in ``tz`` (default: this computer's), ``with_offset`` followed by
    its UTC offset; or ``uptime +HH:MM:SS``."""
    when = started_at(session)
    if when is None:
        return uptime_text(session.start)
    local = when.astimezone(tz)
    return local.strftime("%Y-%m-%d %H:%M:%S") + (f" {offset_text(local.utcoffset())}" if with_offset else "")


def started_offsets(sessions: list[Session], tz: tzinfo | None = None) -> set[timedelta | None]:
    """The UTC offsets the dated ``sessions`` started at in ``tz`` (more than one across a daylight-saving change)."""
    return {when.astimezone(tz).utcoffset() for when in map(started_at, sessions) if when is not None}


def outcome_text(session: Session) -> str:
    return session.outcome.name.lower() if session.outcome is not None else "unknown"


def parse_since(text: str) -> datetime:
    """An ISO 8601 date or date and time (``2025-12-02``, ``2025-12-02T07:30``, with or without offset);
    without an offset it is local time.  ValueError for anything else."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO date or time (e.g. 2025-12-02 or 2025-12-02T07:30)") from None
    return when if when.tzinfo is not None else when.astimezone()


def since_filter(sessions: list[Session], since: datetime) -> tuple[list[Session], int]:
    """The sessions that started at or after ``since``, and how many were left out for lack of a date."""
    kept, undated = [], 0
    for session in sessions:
        when = started_at(session)
        if when is None:
            undated += 1
        elif when >= since:
            kept.append(session)
    return kept, undated


# --------------------------------------------------------------------------
# Table, JSON, CSV

TABLE_HEADER = ("started", "routine", "outcome", "played", "steps", "plays", "pauses", "skips", "acks (given/asked)")
"""The table's columns.  ``steps``: the routine's steps the session got past (played through or skipped);
``plays``: the step iterations (a step for each of 5 fingers plays 5 times), as ``inspect`` counts them."""


def table_rows(sessions: list[Session], tz: tzinfo | None = None, *, with_offset: bool = False) -> list[tuple[str, ...]]:
    """One row of text per session, in :data:`TABLE_HEADER`'s columns."""
    return [(
        start_text(s, tz, with_offset=with_offset), s.routine_name or "-", outcome_text(s), duration_text(s.played_ms), str(s.steps),
        str(s.iterations), str(s.pauses), str(s.skips),
        f"{s.acks_given}/{s.acks_given + s.acks_missed}" if s.acks_given + s.acks_missed else "-",
    ) for s in sessions]


def history_table(sessions: list[Session], tz: tzinfo | None = None) -> str:
    """The sessions as aligned columns under a header line.  Dates are in ``tz`` (default: this computer's zone),
    its UTC offset in the header, or, when the sessions span a daylight-saving change, after each date."""
    offsets = started_offsets(sessions, tz)
    header = TABLE_HEADER
    if len(offsets) == 1:
        header = (f"started ({offset_text(next(iter(offsets)))})", *TABLE_HEADER[1:])
    rows = [header, *table_rows(sessions, tz, with_offset=len(offsets) > 1)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(TABLE_HEADER))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows)


def band_id_text(band_id: int | None) -> str | None:
    """The band's id as ``status`` shows it (``1A2B``), None when the band did not say."""
    return None if band_id is None else f"{band_id:04X}"


def session_json(session: Session) -> dict[str, Any]:
    """A record as JSON: its fields, ``routine_crc32`` as hex, and ``started`` (ISO 8601 UTC to the millisecond,
    or null for an uptime clock)."""
    when = started_at(session)
    data = session.to_json()
    data["routine_crc32"] = f"0x{session.routine_crc32:08X}"
    data["started"] = when.isoformat(timespec="milliseconds").replace("+00:00", "Z") if when else None
    return data


def history_json(sessions: list[Session], band_id: int | None) -> dict[str, Any]:
    """What ``history --json`` prints: the band's id and its sessions."""
    return {"band_id": band_id_text(band_id), "sessions": [session_json(s) for s in sessions]}


CSV_COLUMNS = ("band_id", "seq", "started", "clock", "start", "routine_name", "routine_crc32", "outcome", "played_ms", "paused_ms",
               "pauses", "skips", "steps", "iterations", "acks_given", "acks_missed")


def history_csv(sessions: list[Session], band_id: int | None) -> str:
    """One CSV line per session under a header line (:data:`CSV_COLUMNS`), each naming the band it came from."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for session in sessions:
        row = {"band_id": band_id_text(band_id), **session_json(session)}
        writer.writerow({column: "" if row[column] is None else row[column] for column in CSV_COLUMNS})
    return out.getvalue()


# --------------------------------------------------------------------------
# FIT


@dataclass(frozen=True)
class DeveloperFieldSpec:
    name: str
    base_type: str
    """A fit_tool ``BaseType`` member name."""


FIT_DEVELOPER_FIELDS = (
    DeveloperFieldSpec("routine_name", "STRING"),
    DeveloperFieldSpec("routine_crc32", "UINT32"),
    DeveloperFieldSpec("outcome", "STRING"),
    DeveloperFieldSpec("steps", "UINT16"),
    DeveloperFieldSpec("iterations", "UINT16"),
    DeveloperFieldSpec("pauses", "UINT16"),
    DeveloperFieldSpec("skips", "UINT16"),
    DeveloperFieldSpec("acks_given", "UINT8"),
    DeveloperFieldSpec("acks_missed", "UINT8"),
)
"""The developer fields of every FIT session message, numbered in this order (developer data index 0)."""
FIT_APPLICATION_ID = bytes.fromhex("48616e64437565000000000000000001")
"""The 16-byte application id of HandCue's developer fields ("HandCue", then a version)."""


def _developer_values(session: Session) -> list[Any]:
    return [session.routine_name, session.routine_crc32, outcome_text(session), session.steps, session.iterations,
            session.pauses, session.skips, session.acks_given, session.acks_missed]


def fit_activity(sessions: list[Session], band_id: int = 0) -> bytes:
    """The dated ``sessions`` as one FIT activity file (bytes); ExportError if none has a date."""
    try:
        from fit_tool.base_type import BaseType
        from fit_tool.developer_field import DeveloperField
        from fit_tool.fit_file_builder import FitFileBuilder
        from fit_tool.profile.messages.activity_message import ActivityMessage
        from fit_tool.profile.messages.developer_data_id_message import DeveloperDataIdMessage
        from fit_tool.profile.messages.event_message import EventMessage
        from fit_tool.profile.messages.field_description_message import FieldDescriptionMessage
        from fit_tool.profile.messages.file_id_message import FileIdMessage
        from fit_tool.profile.messages.lap_message import LapMessage
        from fit_tool.profile.messages.record_message import RecordMessage
        from fit_tool.profile.messages.session_message import SessionMessage
        from fit_tool.profile.profile_type import Activity, Event, EventType, FileType, Manufacturer, Sport, SubSport
    except ImportError:
        raise ExportError('writing FIT files needs fit-tool: pip install -e ".[fit]" (in the HandCue folder, as the README says)') from None

    dated = sorted((s for s in sessions if started_at(s) is not None), key=lambda s: s.start)
    if not sessions:
        raise ExportError("the band has no sessions recorded, so there is nothing to write to FIT")
    if not dated:
        raise ExportError("no session has a date (the band's clock was not set when they were recorded), so there is nothing to write to FIT")
    builder = FitFileBuilder(auto_define=True)
    file_id = FileIdMessage()
    file_id.type = FileType.ACTIVITY
    file_id.manufacturer = Manufacturer.DEVELOPMENT.value
    file_id.product = 0
    file_id.serial_number = band_id
    file_id.time_created = dated[-1].start + dated[-1].played_ms + dated[-1].paused_ms
    builder.add(file_id)
    developer = DeveloperDataIdMessage()
    developer.application_id = FIT_APPLICATION_ID
    developer.developer_data_index = 0
    builder.add(developer)
    for number, spec in enumerate(FIT_DEVELOPER_FIELDS):
        description = FieldDescriptionMessage()
        description.developer_data_index = 0
        description.field_definition_number = number
        description.fit_base_type_id = getattr(BaseType, spec.base_type)
        description.field_name = spec.name
        builder.add(description)

    def developer_fields(session: Session) -> list[Any]:
        fields = []
        for number, (spec, value) in enumerate(zip(FIT_DEVELOPER_FIELDS, _developer_values(session), strict=True)):
            base = getattr(BaseType, spec.base_type)
            size = len(value.encode()) + 1 if isinstance(value, str) else base.size
            field = DeveloperField(developer_data_index=0, field_id=number, size=size, base_type=base)
            field.set_value(0, value)
            fields.append(field)
        return fields

    timer_s = 0.0
    for index, session in enumerate(dated):
        start, end = session.start, session.start + session.played_ms + session.paused_ms
        elapsed_s, played_s = (end - start) / 1000, session.played_ms / 1000
        timer_s += played_s
        for kind, when in ((EventType.START, start), (None, start), (None, end), (EventType.STOP_ALL, end)):
            if kind is None:  # an activity file needs records; these carry only the times
                record = RecordMessage()
                record.timestamp = when
                builder.add(record)
                continue
            event = EventMessage()
            event.event, event.event_type, event.timestamp = Event.TIMER, kind, when
            builder.add(event)
        lap = LapMessage()
        lap.message_index, lap.timestamp, lap.start_time = index, end, start
        lap.total_elapsed_time, lap.total_timer_time = elapsed_s, played_s
        builder.add(lap)
        message = SessionMessage(developer_fields=developer_fields(session))
        message.message_index, message.timestamp, message.start_time = index, end, start
        message.total_elapsed_time, message.total_timer_time = elapsed_s, played_s
        message.sport, message.sub_sport = Sport.TRAINING, SubSport.FLEXIBILITY_TRAINING
        message.first_lap_index, message.num_laps = index, 1
        builder.add(message)
    activity = ActivityMessage()
    activity.timestamp = dated[-1].start + dated[-1].played_ms + dated[-1].paused_ms
    activity.total_timer_time = timer_s
    activity.num_sessions = len(dated)
    activity.type = Activity.MANUAL
    activity.event, activity.event_type = Event.ACTIVITY, EventType.STOP
    builder.add(activity)
    data: bytes = builder.build_bytes()
    return data
