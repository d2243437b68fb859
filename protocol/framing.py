"""Frames for byte streams (serial, and the BLE UART characteristic).

On the wire a frame is ``COBS(message || CRC-16) || 0x00``.  COBS removes every
zero byte from the frame so 0x00 can delimit frames; the CRC is
CRC-16/IBM-3740 (poly 0x1021, init 0xFFFF, no reflection, check 0x29B1),
little endian, over the message bytes.

:class:`FrameParser` is incremental: feed it bytes in any chunking and it
returns the complete, verified messages; damaged frames are dropped and
counted, and a frame that grows past the size limit is discarded up to the
next delimiter, so the receiver never stalls on garbage.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

from cobs import cobs

from .constants import FRAME_CRC_SIZE, FRAME_DELIMITER, MAX_FRAME_PAYLOAD

DELIMITER = bytes([FRAME_DELIMITER])


def crc16(data: bytes) -> int:
    """CRC-16/IBM-3740 (a.k.a. CCITT-FALSE); ``crc16(b"123456789") == 0x29B1``."""
    return binascii.crc_hqx(data, 0xFFFF)


def encode_frame(message: bytes) -> bytes:
    """The wire bytes of one message, delimiter included."""
    return bytes(cobs.encode(message + crc16(message).to_bytes(FRAME_CRC_SIZE, "little"))) + DELIMITER


def max_encoded_size(message_size: int) -> int:
    """Worst-case wire size of a message of ``message_size`` bytes."""
    raw = message_size + FRAME_CRC_SIZE
    return raw + raw // 254 + 1 + 1


@dataclass
class ParserStats:
    frames: int = 0
    bad_crc: int = 0
    bad_cobs: int = 0
    oversized: int = 0

    @property
    def dropped(self) -> int:
        return self.bad_crc + self.bad_cobs + self.oversized


class FrameParser:
    """Incremental frame decoder: ``feed(chunk)`` -> list of verified messages."""

    def __init__(self, max_payload: int = MAX_FRAME_PAYLOAD) -> None:
        self.max_payload = max_payload
        self.max_encoded = max_encoded_size(max_payload) - 1  # without the delimiter
        self.stats = ParserStats()
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, chunk: bytes) -> list[bytes]:
        messages = []
        start = 0
        while start < len(chunk):
            end = chunk.find(DELIMITER, start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if not self._discarding:
                self._buffer += piece
                if len(self._buffer) > self.max_encoded:
                    self.stats.oversized += 1
                    self._buffer.clear()
                    self._discarding = True
            if end < 0:
                break
            if not self._discarding and self._buffer:
                message = self._decode(bytes(self._buffer))
                if message is not None:
                    messages.append(message)
            self._buffer.clear()
            self._discarding = False
            start = end + 1
        return messages

    def _decode(self, encoded: bytes) -> bytes | None:
        try:
            raw = bytes(cobs.decode(encoded))
        except cobs.DecodeError:
            self.stats.bad_cobs += 1
            return None
        if len(raw) < FRAME_CRC_SIZE:
            self.stats.bad_cobs += 1
            return None
        message, crc = raw[:-FRAME_CRC_SIZE], int.from_bytes(raw[-FRAME_CRC_SIZE:], "little")
        if len(message) > self.max_payload:
            self.stats.oversized += 1
            return None
        if crc16(message) != crc:
            self.stats.bad_crc += 1
            return None
        self.stats.frames += 1
        return message
