"""The client side of GATT robust caching for a bonded band (Core 5.1, Vol 3 Part G 2.5.2.1; SPEC 21.6).

A client WITH A BOND may use its cached handles without reading the Database Hash first when
the server does robust caching: the server remembers, per central that bonded, whether that client is
change-aware, and protects a change-unaware one (after a firmware update moved the handles)
by ignoring its ATT commands and answering its ATT requests with error 0x12 (Database Out Of
Sync).  So nothing the client sends on stale handles lands on a wrong attribute, and the first
answer says whether the handles were right.

:class:`UnverifiedLink` is that rule for one connection, from the moment it is up until the
first ATT request sent on it is answered:

* write commands go out at once but are kept (characteristic and bytes, in order);
* further requests wait for the first answer (ATT takes one request at a time anyway);
* an answer other than 0x12 (success or any other error: a change-unaware band sends only
  0x12) proves the handles: the kept commands were delivered and are forgotten;
* 0x12: the backend forgets the cache entry and discovers the database again (the band is
  change-aware after it), the refused request is sent again on the characteristic with the
  same UUID in the new database, then the kept commands in order, then the waiting requests,
  each resolved again by UUID.  The caller sees its calls succeed.

:func:`set_robust_caching` writes Client Supported Features bit 0, which a band persists with
the bond only on an encrypted link of that bond; the bumble backend then marks its cache entry
``robust`` (:class:`~companion.ble.gatt_cache.CachedDatabase`).  A central without a bond
starts change-aware by the specification, so it keeps proving the handles with the hash read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from bumble import att, core

if TYPE_CHECKING:
    from bumble.gatt_client import Client

__all__ = ["DATABASE_OUT_OF_SYNC", "UnverifiedLink", "set_robust_caching"]

logger = logging.getLogger(__name__)

DATABASE_OUT_OF_SYNC = att.ErrorCode.DATABASE_OUT_OF_SYNC
"""ATT error 0x12: the server's database changed since this (bonded, robust-caching) client last saw it."""

_T = TypeVar("_T")


class UnverifiedLink:
    """One connection whose cached handles are trusted until the first request's answer says otherwise.

    Args:
        rediscover: forgets the cache entry, discovers the peer's database again (its first
            request makes the band change-aware) and stores the new entry; afterwards the
            backend resolves characteristics in the new database.
        send_kept: sends a kept write command again, on the characteristic with the same UUID
            in the current database.
        on_resynced: called once a resynchronisation is done and the waiting requests may go
            (the backend then makes a bonded band persist that this client is change-aware).

    ``K`` (a characteristic as the caller named it) is opaque here: only ``send_kept`` resolves it.
    """

    def __init__(self, *, rediscover: Callable[[], Awaitable[None]], send_kept: Callable[[Any, bytes], Awaitable[None]],
                 on_resynced: Callable[[], None] | None = None) -> None:
        self._rediscover = rediscover
        self._send_kept = send_kept
        self._on_resynced = on_resynced
        self._kept: list[tuple[Any, bytes]] = []
        self._first_sent = False
        self._resyncing = False
        self._settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.resynced = False
        """Whether the band said 0x12 and the database was discovered again."""

    @property
    def settled(self) -> bool:
        """Whether the first answer came (the link is verified, resynchronised or failed): from then on
        the backend sends directly."""
        return self._settled.done()

    @property
    def kept(self) -> list[tuple[Any, bytes]]:
        """The write commands kept so far (in order), until the first answer."""
        return list(self._kept)

    async def command(self, characteristic: Any, value: bytes, send: Callable[[], Awaitable[None]]) -> None:
        """A write command: kept, and sent at once (``send``) unless a resynchronisation is under way,
        which sends it after those before it, on the new handles."""
        self._kept.append((characteristic, value))
        if not self._resyncing:
            # No await before the send: a command is on its way before the 0x12 that would make it unsafe is seen.
            await send()

    async def request(self, run: Callable[[], Awaitable[_T]]) -> _T:
        """A request: the first goes out at once and decides; the others wait for that.

        ``run`` must resolve its characteristic each time it is called (after a
        resynchronisation it runs on the new database).
        """
        if self._first_sent:
            await asyncio.shield(self._settled)
            return await run()
        self._first_sent = True
        try:
            result = await run()
        except att.ATT_Error as error:
            if error.error_code != DATABASE_OUT_OF_SYNC:
                self._verified()  # a change-unaware band answers only 0x12: any other answer proves the handles
                raise
            logger.info("the band's GATT database changed (ATT error 0x12, Database Out Of Sync): discovering it again")
            return await self._resync(run)
        except BaseException as error:
            self._fail(error)
            raise
        self._verified()
        return result

    async def _resync(self, run: Callable[[], Awaitable[_T]]) -> _T:
        self._resyncing = True  # commands from now on wait for the new handles
        try:
            await self._rediscover()
        except BaseException as error:
            self._fail(error)
            raise
        outcome: BaseException | None = None
        result: Any = None
        try:
            result = await run()  # the refused request, on the new handles
        except att.ATT_Error as error:  # answered: the kept commands still go (they went after it the first time)
            outcome = error
        except BaseException as error:
            self._fail(error)
            raise
        try:
            while self._kept:  # in order, including any added meanwhile
                characteristic, value = self._kept.pop(0)
                await self._send_kept(characteristic, value)
        except BaseException as error:
            self._fail(error)
            raise
        self.resynced = True
        self._verified()
        if self._on_resynced is not None:
            self._on_resynced()
        if outcome is not None:
            raise outcome
        return result

    def _verified(self) -> None:
        self._kept.clear()
        if not self._settled.done():
            self._settled.set_result(None)

    def _fail(self, error: BaseException) -> None:
        """The first request got no answer (link lost, timeout): nothing is known; the waiting requests fail."""
        self._give_up(f"the first request on a link with cached handles failed: {error!r}")

    def close(self) -> None:
        """The link went down: forget the kept commands.  The backend has already cancelled the requests in
        flight (its guard turns that into BleakError for their callers); a request still waiting here fails
        with an error too, not a cancellation its caller did not ask for."""
        self._give_up("the link closed before its cached handles were proven")

    def _give_up(self, why: str) -> None:
        self._kept.clear()
        if not self._settled.done():
            self._settled.set_exception(core.InvalidStateError(why))
            self._settled.exception()  # seen here: a link with no waiting request must not log it


async def set_robust_caching(gatt_client: Client) -> bool:
    """Set bit 0 of the peer's Client Supported Features for this client (bits already set stay set).

    One Read By Type of 0x2B29 finds the characteristic and its value for this client, one
    write request sets the bit.  Returns False if the peer has no such characteristic.

    Raises:
        att.ATT_Error: the peer refused the read or the write.
    """
    from bumble.gatt import GATT_CLIENT_SUPPORTED_FEATURES_CHARACTERISTIC, ClientSupportedFeatures

    response = await gatt_client.send_request(
        att.ATT_Read_By_Type_Request(starting_handle=0x0001, ending_handle=0xFFFF, attribute_type=GATT_CLIENT_SUPPORTED_FEATURES_CHARACTERISTIC))
    if response is None or response.op_code == att.Opcode.ATT_ERROR_RESPONSE:
        if response is not None and response.error_code != att.ErrorCode.ATTRIBUTE_NOT_FOUND:
            raise att.ATT_Error(error_code=response.error_code, message=response)
        return False
    if not response.attributes:
        return False
    handle, value = response.attributes[0]
    features = bytearray(value or b"\x00")
    features[0] |= ClientSupportedFeatures.ROBUST_CACHING
    await gatt_client.write_value(handle, bytes(features), with_response=True)
    return True
