"""The unverified link of robust caching (companion/ble/robust_caching.py), without any Bluetooth: what goes out,
in which order, and what the callers see, for each answer the first request can get."""

from __future__ import annotations

import asyncio
from typing import Any

from bumble import att, core

from companion.ble.robust_caching import UnverifiedLink


class Wire:
    """What the link sent, in order, and on which database ("old" until the rediscovery)."""

    def __init__(self, first_answer: BaseException | None) -> None:
        self.sent: list[tuple[str, ...]] = []
        self.database = "old"
        self.first_answer = first_answer
        self.resynced = 0
        self.link = UnverifiedLink(rediscover=self.rediscover, send_kept=self.send_kept, on_resynced=self.on_resynced)

    async def rediscover(self) -> None:
        self.sent.append(("discovery",))
        await asyncio.sleep(0)
        self.database = "new"

    async def send_kept(self, name: Any, value: bytes) -> None:
        self.sent.append(("command", name, value.decode(), self.database, "again"))

    def on_resynced(self) -> None:
        self.resynced += 1

    async def command(self, name: str, value: bytes) -> None:
        async def send() -> None:
            self.sent.append(("command", name, value.decode(), self.database))

        await self.link.command(name, value, send)

    def request(self, name: str) -> Any:
        async def run() -> str:
            self.sent.append(("request", name, self.database))
            await asyncio.sleep(0.001)  # the answer comes later
            if self.database == "old" and self.first_answer is not None:
                raise self.first_answer
            return f"{name} answered"

        return self.link.request(run)


async def transport_start(wire: Wire) -> tuple[asyncio.Task[Any], asyncio.Task[Any]]:
    """As the BLE transport: the CCCD write (first request), the pairing read behind it, frames as commands."""
    subscribe = asyncio.ensure_future(wire.request("cccd"))
    await asyncio.sleep(0)
    read = asyncio.ensure_future(wire.request("pairing"))
    await asyncio.sleep(0)
    for frame in (b"\x00", b"INFO", b"STATUS"):
        await wire.command("rx", frame)
    return subscribe, read


def test_a_first_answer_that_is_not_0x12_proves_the_handles():
    async def job() -> tuple[Wire, Any, Any]:
        wire = Wire(first_answer=None)
        subscribe, read = await transport_start(wire)
        return wire, await subscribe, await read

    wire, subscribed, read = asyncio.run(job())
    assert subscribed == "cccd answered" and read == "pairing answered"
    assert wire.sent == [("request", "cccd", "old"), ("command", "rx", "\x00", "old"), ("command", "rx", "INFO", "old"),
                         ("command", "rx", "STATUS", "old"), ("request", "pairing", "old")]  # the read waited for the first answer
    assert wire.link.settled and wire.link.kept == [] and wire.resynced == 0


def test_0x12_rediscovers_and_sends_everything_again_in_order_on_the_new_handles():
    async def job() -> tuple[Wire, Any, Any]:
        wire = Wire(first_answer=att.ATT_Error(att.ErrorCode.DATABASE_OUT_OF_SYNC))
        subscribe, read = await transport_start(wire)
        while wire.database == "old":
            await asyncio.sleep(0)
        await wire.command("rx", b"LATE")  # during the resynchronisation: waits for the new handles
        return wire, await subscribe, await read

    wire, subscribed, read = asyncio.run(job())
    assert subscribed == "cccd answered" and read == "pairing answered"  # the callers saw their calls succeed
    assert wire.sent == [
        ("request", "cccd", "old"), ("command", "rx", "\x00", "old"), ("command", "rx", "INFO", "old"), ("command", "rx", "STATUS", "old"),
        ("discovery",),
        ("request", "cccd", "new"),
        ("command", "rx", "\x00", "new", "again"), ("command", "rx", "INFO", "new", "again"), ("command", "rx", "STATUS", "new", "again"),
        ("command", "rx", "LATE", "new", "again"),
        ("request", "pairing", "new"),
    ]
    assert wire.link.resynced and wire.resynced == 1 and wire.link.kept == []


def test_another_error_proves_the_handles_and_reaches_the_caller():
    async def job() -> tuple[Wire, BaseException | None, Any]:
        wire = Wire(first_answer=att.ATT_Error(att.ErrorCode.INSUFFICIENT_AUTHENTICATION))
        subscribe, read = await transport_start(wire)
        error = None
        try:
            await subscribe
        except att.ATT_Error as refused:
            error = refused
        wire.first_answer = None
        return wire, error, await read

    wire, error, read = asyncio.run(job())
    assert isinstance(error, att.ATT_Error) and error.error_code == att.ErrorCode.INSUFFICIENT_AUTHENTICATION
    assert read == "pairing answered" and ("discovery",) not in wire.sent


def test_no_first_answer_fails_the_waiting_requests():
    async def job() -> tuple[BaseException | None, BaseException | None]:
        wire = Wire(first_answer=core.TimeoutError("no answer"))
        subscribe, read = await transport_start(wire)
        results = await asyncio.gather(subscribe, read, return_exceptions=True)
        return results[0], results[1]

    first, waiting = asyncio.run(job())
    assert isinstance(first, core.TimeoutError)
    assert isinstance(waiting, core.InvalidStateError)

