"""Frames and messages: golden bytes, any chunking, garbage tolerance."""

from __future__ import annotations

import random

from protocol.constants import Opcode, Status
from protocol.framing import FrameParser, crc16, encode_frame
from protocol.messages import StatusRequest, UploadBeginRequest, UploadDataRequest, decode_message, encode_error, encode_request


def test_crc16_is_ibm_3740():
    assert crc16(b"123456789") == 0x29B1


def test_golden_request_frame():
    message = encode_request(UploadBeginRequest(length=279, crc32=0x11223344), 7)
    assert message.hex() == "01000207" "17010000" "44332211"
    frame = encode_frame(message)
    assert frame[0] == 0 and frame[-1] == 0 and 0 not in frame[1:-1]
    assert FrameParser().feed(frame) == [message]


def test_a_torn_frame_never_swallows_the_next_one():
    """A frame cut short (cable pull, lost delimiter) is ended by the next frame's leading delimiter."""
    first = encode_request(UploadDataRequest(offset=0, data=bytes(range(1, 100))), 1)
    second = encode_request(StatusRequest(), 2)
    for cut in range(1, len(encode_frame(first)) - 1):
        parser = FrameParser()
        assert parser.feed(encode_frame(first)[:cut] + encode_frame(second)) == [second], cut
        assert parser.stats.frames == 1 and parser.stats.dropped == (1 if cut > 1 else 0)


def test_leading_delimiters_are_not_counted():
    parser = FrameParser()
    messages = [encode_request(StatusRequest(), i) for i in range(5)]
    assert parser.feed(b"".join(encode_frame(m) for m in messages)) == messages
    assert parser.stats.dropped == 0 and parser.stats.frames == 5


def test_golden_error_response():
    message = encode_error(Opcode.UPLOAD_COMMIT, 9, Status.TABLE_REFUSED, 4, "bad crc")
    assert message.hex() == "01010409" "0a04" "07" + b"bad crc".hex()
    decoded = decode_message(message)
    assert (decoded.status, decoded.detail, decoded.reason) == (Status.TABLE_REFUSED, 4, "bad crc")


def test_parser_random_chunks_with_garbage():
    rng = random.Random(1234)
    messages = [encode_request(UploadDataRequest(offset=i * 10, data=bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))), i) for i in range(50)]
    stream = bytearray()
    for index, message in enumerate(messages):
        if index % 7 == 3:
            stream += bytes(rng.randrange(1, 256) for _ in range(20)) + b"\x00"  # line noise
        stream += encode_frame(message)
    parser = FrameParser()
    received = []
    position = 0
    while position < len(stream):
        size = rng.randint(1, 9)
        received += parser.feed(bytes(stream[position : position + size]))
        position += size
    assert received == messages
    assert parser.stats.dropped == sum(1 for i in range(50) if i % 7 == 3)


def test_oversized_frame_is_discarded_and_parser_recovers():
    parser = FrameParser(max_payload=32)
    good = encode_request(StatusRequest(), 1)
    assert parser.feed(b"\x01" * 500 + b"\x00" + encode_frame(good)) == [good]
    assert parser.stats.oversized == 1
