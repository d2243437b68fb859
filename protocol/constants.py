"""Every number the band and the companion must agree on, defined once.

Enums for codes that travel in bytes, and the hard limits of the step-table
format.  ``protocol/SPEC.md`` documents each of them; the golden-byte tests pin
their values.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

# --------------------------------------------------------------------------
# Step table


TABLE_MAGIC = b"HCue"
TABLE_FORMAT_VERSION = 2
"""The newest table format this code reads and writes (2: acknowledgements, SPEC.md §3)."""
TABLE_BASE_VERSION = 1
"""The format written when a table uses nothing newer, so tables without acknowledgements keep their bytes."""
TABLE_READ_VERSIONS = (1, 2)
"""Every table format version this code reads."""
TABLE_HEADER_SIZE = 24
TABLE_RECORD_SIZE = 16
PATTERN_DESCRIPTOR_SIZE = 2
SEGMENT_SIZE = 2
NO_PATTERN = 0xFF
"""Pattern index meaning "no cue here"."""

TIME_UNIT_MS = 100
"""Step records count durations, tick intervals and warnings in 100 ms units."""
SEGMENT_UNIT_MS = 10
"""Cue pattern segments count time in 10 ms units (the DRV2605 wait unit)."""


class Limits:
    """Hard limits, enforced when compiling and when parsing a table."""

    MAX_TABLE_BYTES = 32 * 1024
    MAX_RECORDS = 1024
    MAX_PATTERNS = 32
    MAX_SEGMENTS = 255
    MAX_SEGMENTS_PER_PATTERN = 8
    MAX_LOOP_NESTING = 4
    MAX_COUNT = 255
    MAX_STEP_UNITS = 0xFFFF
    """A step iteration lasts at most 65535 x 100 ms (109 min 13.5 s)."""
    MIN_STEP_MS = 1000
    MAX_TOTAL_MS = 0xFFFFFFFF
    MIN_PULSE_MS = 30
    MIN_GAP_MS = 100
    MAX_PATTERN_MS = 1000
    MAX_AMPLITUDE = 100
    MAX_NAME_BYTES = 64


class Ack:
    """How a band asks for an acknowledgement (format 2, SPEC.md §12.10): fixed by the format, not per table."""

    REPEAT_MS = 5000
    """The cue repeats this long after its last play while no acknowledgement comes."""
    GIVE_UP_MS = 60_000
    """Routine time from the first cue after which the band goes on without one (a missed acknowledgement)."""
    MAX_PLAYS = GIVE_UP_MS // REPEAT_MS
    """How many times the cue plays at most while waiting: the first cue and 11 repeats."""


class TableFlags(IntFlag):
    """Bits of the header's flags byte."""

    NAMES = 0x01
    ACK_DONE = 0x02
    """Format 2: the routine's finish waits for an acknowledgement (format 1 ignores the bit)."""


class StepFlags(IntFlag):
    """Bits of a STEP record's flags byte (offset 14; format 2 only, reserved in format 1)."""

    ACK = 0x01
    """The step waits for an acknowledgement after its START cue before its time runs."""


class RecordKind(IntEnum):
    """First byte of every step-table record."""

    STEP = 1
    LOOP = 2


class Iterate(IntEnum):
    """What a step or a loop repeats over."""

    NONE = 0
    """A loop: plain rounds.  A step: its count repeats the step."""
    FINGER = 1
    HAND = 2


class Hands(IntEnum):
    """Which hands a routine treats, in which order."""

    LEFT = 0
    RIGHT = 1
    LEFT_THEN_RIGHT = 2
    RIGHT_THEN_LEFT = 3

    @property
    def order(self) -> tuple[str, ...]:
        return _HAND_ORDERS[self]


_HAND_ORDERS = {
    Hands.LEFT: ("left",),
    Hands.RIGHT: ("right",),
    Hands.LEFT_THEN_RIGHT: ("left", "right"),
    Hands.RIGHT_THEN_LEFT: ("right", "left"),
}

FINGERS = ("thumb", "index", "middle", "ring", "little")


class CueKind(IntEnum):
    """Why a cue fires.  When cues coincide, the highest value wins."""

    TICK = 1
    WARN = 2
    START = 3
    NEXT = 4
    """Next finger (step or loop iterating over fingers) or next round of a step."""
    ROUND = 5
    SWITCH = 6
    """Next hand."""
    DONE = 7

    @property
    def text_id(self) -> str:
        """The cue's name where text or JSON is written (``handcue inspect``, the band's trace)."""
        return self.name.lower()


class TechniqueCode(IntEnum):
    """Technique byte of a step record; string ids are the user-facing names."""

    WARM_UP = 1
    JOYSTICK = 2
    ACUPRESSURE = 3
    ACUPRESSURE_PC6 = 4
    ACUPRESSURE_LI4 = 5
    FLEX_EXTEND = 6
    FINGER_SQUEEZE = 7
    KEY_GRIP = 8
    DOORKNOB = 9
    HANDSHAKE = 10
    PALM_SPREAD = 11
    COMBING = 12

    @property
    def text_id(self) -> str:
        return _TECHNIQUE_TEXT_IDS[self]

    @classmethod
    def from_text_id(cls, text_id: str) -> TechniqueCode:
        return _TECHNIQUE_BY_TEXT_ID[text_id]


_TECHNIQUE_TEXT_IDS = {
    TechniqueCode.WARM_UP: "warm_up",
    TechniqueCode.JOYSTICK: "joystick",
    TechniqueCode.ACUPRESSURE: "acupressure",
    TechniqueCode.ACUPRESSURE_PC6: "acupressure:PC6",
    TechniqueCode.ACUPRESSURE_LI4: "acupressure:LI4",
    TechniqueCode.FLEX_EXTEND: "flex_extend",
    TechniqueCode.FINGER_SQUEEZE: "finger_squeeze",
    TechniqueCode.KEY_GRIP: "key_grip",
    TechniqueCode.DOORKNOB: "doorknob",
    TechniqueCode.HANDSHAKE: "handshake",
    TechniqueCode.PALM_SPREAD: "palm_spread",
    TechniqueCode.COMBING: "combing",
}
_TECHNIQUE_BY_TEXT_ID = {text: code for code, text in _TECHNIQUE_TEXT_IDS.items()}


class TableError(IntEnum):
    """Why a table is refused; also sent by the band as upload status details."""

    OK = 0
    TOO_SHORT = 1
    BAD_MAGIC = 2
    BAD_VERSION = 3
    BAD_CRC = 4
    BAD_SIZE = 5
    LIMIT = 6
    BAD_RECORD = 7
    BAD_PATTERN = 8
    BAD_NESTING = 9
    BAD_NAMES = 10


class Status(IntEnum):
    """Status code of every response from the band."""

    OK = 0
    UNKNOWN_REQUEST = 1
    BAD_REQUEST = 2
    UNSUPPORTED_VERSION = 3
    BAD_STATE = 4
    NO_ROUTINE = 5
    BUSY = 6
    TOO_LARGE = 7
    NO_UPLOAD = 8
    BAD_OFFSET = 9
    TABLE_REFUSED = 10
    FLASH_FAILURE = 11


# --------------------------------------------------------------------------
# Transfer protocol


PROTOCOL_VERSION = 1
FRAME_DELIMITER = 0x00
FRAME_CRC_SIZE = 2
MAX_FRAME_PAYLOAD = 256
"""Largest message (before CRC and COBS) a band must accept; its info may raise it."""
MESSAGE_HEADER_SIZE = 4
DEFAULT_UPLOAD_WINDOW = 16


class MessageKind(IntEnum):
    REQUEST = 0
    RESPONSE = 1
    NOTIFICATION = 2


class Opcode(IntEnum):
    """What a request asks; responses and notifications repeat it."""

    INFO = 1
    UPLOAD_BEGIN = 2
    UPLOAD_DATA = 3
    UPLOAD_COMMIT = 4
    ERASE = 5
    START = 6
    PAUSE = 7
    RESUME = 8
    SKIP = 9
    STOP = 10
    STATUS = 11
    SETTINGS = 12
    SET_SETTINGS = 13
    SET_TIME = 14
    HISTORY = 15
    CLEAR_HISTORY = 16
    PREVIEW = 17
    """Play one cue pattern now at a given strength (calibration); the stored routine is untouched."""


class SkipScope(IntEnum):
    """How far a SKIP goes (the optional body byte of SKIP; SPEC.md §12.6, §17.6)."""

    ITERATION = 0
    """To the next iteration: the next finger or hand, the next round of a repeated step, else the next step."""
    STEP = 1
    """Past the current step record with all its remaining iterations (also what a SKIP without a body means)."""


class BandState(IntEnum):
    """The band's state as STATUS and INFO report it (SPEC.md §16.4, §18.1)."""

    IDLE = 0
    RUNNING = 1
    PAUSED = 2
    FINISHED = 3
    WAITING = 4
    """Running, and waiting at an acknowledgement point for the wearer's press (SPEC.md §12.10): the band repeats
    the START cue of ``step`` (or, with no step, DONE) and STATUS's ``step_remaining_ms`` is the time until it gives up.
    A companion from before it reads the code as unknown (4); a band from before it reports such a wait as RUNNING."""


class BootOutcome(IntEnum):
    """What a mount found; the value is the stable number a band reports (e.g. in INFO)."""

    BLANK = 0
    """Erased flash (a first journal entry torn by a cut at most): no routine was ever stored."""
    INTACT = 1
    """Journal and routine (if any) verified; a torn last entry from a power cut is normal."""
    JOURNAL_DAMAGED = 2
    """Damaged journal entries (not a torn write) were skipped; the routine the rest names verified."""
    RECOVERED_PREVIOUS = 3
    """The newest routine failed its check; the one committed before it verified and is active."""
    ACTIVE_SLOT_CORRUPT = 4
    """The newest routine failed its check and no earlier one is intact: the band holds none."""
    JOURNAL_LOST = 5
    """The flash is not blank but neither journal sector holds a complete state: the band holds none."""

    @property
    def text_id(self) -> str:
        """The outcome for people and JSON: ``intact``, ``recovered-previous``."""
        return self.name.lower().replace("_", "-")

    @property
    def label(self) -> str:
        return self.text_id


NO_STEP = 0xFFFF


# --------------------------------------------------------------------------
# Session history (protocol/history.py, SPEC.md §19.8)


class SessionOutcome(IntEnum):
    """How a recorded session ended."""

    FINISHED = 1
    STOPPED = 2
    RESTARTED = 3
    """START again while a session was under way."""


class ClockKind(IntEnum):
    """What a session record's ``start`` counts."""

    UPTIME_MS = 0
    """Band uptime in ms (no companion set the band's clock since it booted)."""
    UNIX_MS = 1
    """Unix time in ms (a companion set the clock: SET_TIME)."""


# --------------------------------------------------------------------------
# Bluetooth LE (Nordic-UART-style service carrying the same frames as serial)


class BleUuid:
    """GATT UUIDs of the band."""

    SERVICE = "6e400001-b5a3-f393-e0a9-e50e24dcca9e"
    RX = "6e400002-b5a3-f393-e0a9-e50e24dcca9e"
    """Companion -> band: write / write without response."""
    TX = "6e400003-b5a3-f393-e0a9-e50e24dcca9e"
    """Band -> companion: notify."""
    DEVICE_INFORMATION = "0000180a-0000-1000-8000-00805f9b34fb"
    BATTERY = "0000180f-0000-1000-8000-00805f9b34fb"
    BATTERY_LEVEL = "00002a19-0000-1000-8000-00805f9b34fb"
    PAIRING = "6e400010-b5a3-f393-e0a9-e50e24dcca9e"
    """Pairing state and control (in the HandCue service): read one :class:`PairingState`
    byte; write :class:`PairingControl.FORGET_ME` from a trusted link to delete its bond."""


class PairingState(IntFlag):
    """The byte read from the pairing characteristic; the band computes it per connection."""

    PROTECTED = 0x01
    """The band holds a bond: state-changing commands need an encrypted link from a bonded central."""
    WINDOW_OPEN = 0x02
    """The pairing window is open (its button was pressed less than 60 s ago)."""
    TRUSTED = 0x04
    """This link is encrypted and comes from a bonded central."""


class PairingControl(IntEnum):
    """Values written to the pairing characteristic."""

    FORGET_ME = 0x01
    """Delete the bond of the central writing (refused unless the link is trusted)."""


BLE_NAME_PREFIX = "HandCue-"
