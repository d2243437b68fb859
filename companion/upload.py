"""One upload of a table: go-back-N over the band's cumulative acknowledgements, BEGIN and COMMIT pipelined.

:meth:`companion.client.BandClient.upload` makes an :class:`UploadRun` and runs it; the
run sends through the client's plumbing (request ids, the retransmission timer, the
transport) and keeps the state of one upload: what the band confirmed, what is in
flight, the adaptive chunk and number of frames ahead, and the COMMIT on its way
(SPEC §19.2).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from protocol.constants import Status
from protocol.errors import UploadError
from protocol.framing import max_wire_size
from protocol.messages import (
    UPLOAD_DATA_OVERHEAD,
    Request,
    UploadBeginRequest,
    UploadBeginResponse,
    UploadCommitRequest,
    UploadCommitResponse,
    UploadDataRequest,
    encode_request,
)

from .errors import BandAnswerError, BandTimeout

if TYPE_CHECKING:
    from .client import Answer, BandClient

__all__ = ["ProgressCallback", "Sent", "UploadResult", "UploadRun"]

MAX_RETRIES = 8
"""Upload: retransmission rounds in a row without progress before giving up."""
STALE_PENDING_LIMIT = 128
"""Upload: answers of frames sent before a go-back still awaited at most this many ids; older ones are held instead."""
MIN_CHUNK = 16
"""Upload: the smallest data chunk a noisy link shrinks frames to."""
GROW_AFTER = 4
"""Upload: clean acknowledgements in a row after which the chunk grows again."""
WINDOW_SHARE_OF_TIMEOUT = 0.5
"""Upload: the bytes in flight take at most this share of the timeout on the wire, so an ack wait fits in it."""
PIPELINED_BEGIN_FIRMWARE = (0, 2)
"""Bands from this firmware (INFO) accept UPLOAD_DATA and UPLOAD_COMMIT only on a link whose last UPLOAD_BEGIN
they accepted (SPEC §19.2), so the first data frames may follow BEGIN before its answer."""


@dataclass(frozen=True)
class UploadResult:
    size: int
    crc32: int
    resumed_from: int
    frames_sent: int
    retransmissions: int
    total_ms: int
    commit_retried: bool = False
    """The first answer to UPLOAD_COMMIT was lost; the retry (or INFO) showed the band had switched."""


ProgressCallback = Callable[[int, int], None]


@dataclass(eq=False)
class Sent:
    """A request on the wire whose answer is awaited."""

    request_id: int
    request: Request[Any]
    future: asyncio.Future[Answer]
    frame: bytes
    left_wire: float
    """When (loop time) the last try's last byte left the wire: its retransmission timer counts from here."""
    first_sent: float
    seq: int = 0
    """Order of sending within the client: the band answers a link's requests in this order."""
    sends: int = 1
    timed: bool = True
    """Whether its round trip is a sample for the timer (not for data sent before BEGIN's answer: it waited behind BEGIN)."""
    early: bool = False
    """Sent before UPLOAD_BEGIN was answered: NO_UPLOAD means BEGIN had not reached the band yet."""

    @property
    def offset(self) -> int:
        assert isinstance(self.request, UploadDataRequest)
        return self.request.offset

    @property
    def end(self) -> int:
        assert isinstance(self.request, UploadDataRequest)
        return self.request.offset + len(self.request.data)


class UploadRun:
    """One :meth:`BandClient.upload`: go-back-N over the band's cumulative acks, BEGIN and COMMIT pipelined.

    The data chunk adapts to the link: cut to two thirds (down to :data:`MIN_CHUNK`) after
    every loss, grown by a quarter after :data:`GROW_AFTER` clean acknowledgements in a row,
    so a noisy link gets short frames that survive and a clean one long frames that carry more;
    the frames kept unanswered halve after a loss and grow back one at a time the same way.
    The bytes in flight stay within :data:`WINDOW_SHARE_OF_TIMEOUT` of the
    timeout on the wire, so every ack wait fits in the timeout at any baud rate.

    UPLOAD_COMMIT goes out as soon as the last data frame has been sent; the band
    handles a link's requests in order, so it checks the upload after that frame.  A
    COMMIT that finds bytes missing (BAD_OFFSET: a frame was lost) keeps the upload:
    the missing frames go again, then a new COMMIT.  The band verifies the whole
    table's size and CRC-32 at every COMMIT, so it never activates a partial table.
    """

    def __init__(self, client: BandClient, data: bytes, crc: int, progress: ProgressCallback | None) -> None:
        self.client = client
        self.data, self.crc, self.size = data, crc, len(data)
        self.progress = progress
        self.address = client.transport.address
        self.confirmed = self.next_offset = 0
        self.progress_at = 0.0
        """When (loop time) the band last confirmed new bytes."""
        self.reported = -1
        """The confirmed offset last given to ``progress`` (each figure is reported once)."""
        self.frames = self.retransmissions = self.stalls = self.clean = 0
        self.in_flight: list[Sent] = []  # oldest first
        self.stale: list[Sent] = []  # sent before a go-back; their answers still come
        self.commit: Sent | None = None
        self.lead: Request[Any] | None = None
        """A request to send in the write of the next data frame (the pipelined BEGIN)."""
        self.lead_sent: Sent | None = None
        self.commit_retried = False
        self.back_since_commit = False
        """Whether the data went back since COMMIT was sent (then a BAD_OFFSET answer to it needs no go-back of its own)."""
        self.best_chunk = self.chunk = 1
        self.window = 1
        self.frames_ahead = 1
        """Frames to keep unanswered: the band's window, halved after each loss and grown by one after clean
        acknowledgements (after the chunk), so that a noisy link does not send a whole window again each time."""
        self.budget = 0

    # ---------------------------------------------------------------- setup

    def _limits(self, max_chunk: int, window: int) -> None:
        client = self.client
        self.window = self.frames_ahead = window
        best = client._chunk_size(max_chunk)
        rate = client.transport.bytes_per_second
        if rate:
            self.budget = int(rate * client.timeout * WINDOW_SHARE_OF_TIMEOUT)
            room = self.budget - max_wire_size(UPLOAD_DATA_OVERHEAD)
            best = max(1, min(best, room if room >= MIN_CHUNK else MIN_CHUNK))
        else:
            self.budget = 0
        self.best_chunk = self.chunk = best

    def _begin_checked(self, begin: UploadBeginResponse) -> None:
        if begin.max_chunk < 1 or begin.window < 1:
            raise BandAnswerError(f"{self.address} answered UPLOAD_BEGIN with unusable limits: chunks of at most "
                                  f"{begin.max_chunk} bytes, a window of {begin.window} frames (each must be at least 1)")
        if begin.offset > self.size:
            raise BandAnswerError(f"{self.address} answered UPLOAD_BEGIN with offset {begin.offset}, past the table's {self.size} bytes")

    def _report(self) -> None:
        """Tell the progress callback how many bytes the band has confirmed, once per new figure."""
        if self.progress and self.confirmed != self.reported:
            self.reported = self.confirmed
            self.progress(self.confirmed, self.size)

    async def go(self) -> UploadResult:
        client = self.client
        phases = client.transport.phases
        begin_request = UploadBeginRequest(length=self.size, crc32=self.crc)
        # Phases as the user sees them: "data" runs from the first data write to the band's confirmation
        # of the last byte; when BEGIN is pipelined its first write carries the first data frame too, so
        # "UPLOAD_BEGIN" (BEGIN's round trip) lies inside "data".  COMMIT is sent inside "data" as well;
        # "UPLOAD_COMMIT" is the wait for its answer after the data's.
        with contextlib.ExitStack() as data_phase:
            if client._pipelines():
                assert client.band_info is not None
                data_phase.enter_context(phases.phase("data"))
                with phases.phase("UPLOAD_BEGIN"):
                    begin = await self._pipelined_begin(begin_request, client.band_info.max_frame - UPLOAD_DATA_OVERHEAD, client.band_info.window)
            else:
                # BEGIN may erase flash sectors on the band: it gets the long timeout too.
                begin = await client.request(begin_request, timeout=client.commit_timeout, what="UPLOAD_BEGIN")
                self._begin_checked(begin)
                self._limits(begin.max_chunk, begin.window)
                self.confirmed = self.next_offset = begin.offset
                data_phase.enter_context(phases.phase("data"))
            resumed_from = begin.offset
            self._report()
            commit = await self._transfer()
        with phases.phase("UPLOAD_COMMIT"):
            if commit is None:
                commit = await self._finish_commit()
        if commit.crc32 != self.crc:
            raise BandAnswerError(f"{self.address} reports CRC-32 0x{commit.crc32:08X} at UPLOAD_COMMIT; "
                                  f"the table's is 0x{self.crc:08X} (upload it again)")
        # The band committed every byte, though the answers to the last data frames may not have come
        # (a retransmission after COMMIT is answered NO_UPLOAD): the user's progress ends at 100 %.
        self.confirmed = self.size
        self._report()
        return UploadResult(self.size, self.crc, resumed_from, self.frames, self.retransmissions, commit.total_ms, self.commit_retried)

    async def _pipelined_begin(self, begin_request: UploadBeginRequest, max_chunk: int, window: int) -> UploadBeginResponse:
        """Send BEGIN and, behind it, the first window of data from offset 0; wait for BEGIN's answer.

        The band refuses data on a link whose last BEGIN it did not accept (NO_UPLOAD), so
        frames behind a refused or lost BEGIN never touch storage; a refusal is BEGIN's error.
        """
        client = self.client
        loop = asyncio.get_running_loop()
        self._limits(max_chunk, window)
        self.lead = begin_request
        try:
            await self._fill(early=True)
            begin = self.lead_sent
            assert begin is not None
            while True:
                due = min(begin.first_sent + client.commit_timeout, begin.left_wire + client._answer_allowance(begin_request))
                with contextlib.suppress(TimeoutError):
                    answer = await asyncio.wait_for(asyncio.shield(begin.future), max(0.0, due - loop.time()))
                    break
                if loop.time() >= begin.first_sent + client.commit_timeout:
                    raise BandTimeout(f"no answer from {self.address} to UPLOAD_BEGIN within {client.commit_timeout:g} s"
                                      f"{f' ({begin.sends} tries)' if begin.sends > 1 else ''} (is it a HandCue band, powered and in range?)")
                await client._resend(begin)
        finally:
            if self.lead_sent is not None:
                client._abandon(self.lead_sent.request_id, self.lead_sent.future)
        client._sample(begin, answer)
        response = client._checked(begin_request, answer.message)  # a refusal: the data behind it was answered NO_UPLOAD
        self._begin_checked(response)
        now = loop.time()
        if response.max_chunk < self.best_chunk or response.window < self.window:
            # Other limits than INFO's: what was sent may be too large (the band drops it unread); send again within them.
            self._limits(response.max_chunk, response.window)
            self._go_back_to(response.offset, loss=False)
        elif response.offset:
            # Resuming: frames from the band's offset on are stored in turn; the others are dropped as duplicates.
            expect, keep = response.offset, []
            for sent in self.in_flight:
                if sent.offset == expect:
                    keep.append(sent)
                    expect = sent.end
                else:
                    self.stale.append(sent)
            self.in_flight, self.next_offset = keep, max(expect, response.offset)
        self.confirmed = response.offset
        for sent in self.in_flight:
            sent.left_wire = max(sent.left_wire, now)  # they waited behind BEGIN: their timers start now
        return response

    # ---------------------------------------------------------------- data

    def _go_back_to(self, offset: int, *, loss: bool = True) -> None:
        self.back_since_commit = True
        if loss:
            self.retransmissions += sum(1 for sent in self.in_flight if sent.end > self.confirmed)
            self.chunk = max(min(MIN_CHUNK, self.best_chunk), self.chunk * 2 // 3)
            self.frames_ahead = max(1, self.frames_ahead // 2)
            self.clean = 0
        self.stale.extend(self.in_flight)
        self.in_flight.clear()
        self.next_offset = offset

    async def _fill(self, *, early: bool = False) -> None:
        """Send data frames while the window, the byte budget and the table allow.

        :attr:`lead` (BEGIN) goes in the same write as the first frame, which is cut to leave it
        room; COMMIT goes in the write of the last frame when it fits there without another write.
        """
        client = self.client
        in_flight_bytes = sum(max_wire_size(UPLOAD_DATA_OVERHEAD + s.end - s.offset) for s in self.in_flight)
        while self.next_offset < self.size and len(self.in_flight) < self.frames_ahead:
            size = client._fit(self.chunk, self.best_chunk)
            lead = [self.lead] if self.lead is not None else []
            if self.lead is not None:
                shared = client._room_after(max_wire_size(len(encode_request(self.lead, 0))), size)
                if shared >= min(MIN_CHUNK, size):
                    size = shared
                else:  # no room beside a data frame (a tiny MTU): the lead goes alone
                    [self.lead_sent], self.lead, lead = await client._send(self.lead), None, []
            piece = UploadDataRequest(offset=self.next_offset, data=self.data[self.next_offset : self.next_offset + size])
            frame_bytes = max_wire_size(UPLOAD_DATA_OVERHEAD + len(piece.data))
            if self.in_flight and self.budget and in_flight_bytes + frame_bytes > client._pipe_bytes(self.budget, frame_bytes):
                break
            while self.stale and len(client._pending) >= STALE_PENDING_LIMIT:
                old = self.stale.pop(0)  # the oldest answer still awaited: hold its id instead
                client._abandon(old.request_id, old.future)
            trail: list[Request[Any]] = []
            commit_bytes = max_wire_size(len(encode_request(UploadCommitRequest(), 0)))
            if self.commit is None and piece.offset + len(piece.data) == self.size and \
                    client._room_after(commit_bytes, len(piece.data)) == len(piece.data):
                trail = [UploadCommitRequest()]
            sent = await client._send(*lead, piece, *trail)
            if lead:
                self.lead, self.lead_sent = None, sent.pop(0)
            if trail:
                self.commit = sent.pop()
                self.commit.early = early
                self.back_since_commit = False
            [data_sent] = sent
            data_sent.early, data_sent.timed = early, not early
            self.in_flight.append(data_sent)
            in_flight_bytes += frame_bytes
            self.next_offset += len(piece.data)
            self.frames += 1

    def _stall(self, *, silent: bool) -> None:
        """No progress again (``silent``: nothing came back in time; else the band dropped a frame); give up after too many."""
        self.stalls += 1
        if self.stalls <= MAX_RETRIES:
            return
        if silent:
            raise BandTimeout(
                f"{self.address} did not acknowledge upload data at offset {self.confirmed} "
                f"({MAX_RETRIES + 1} waits of up to {self.client._answer_allowance():.2g} s in a row; "
                f"{self.confirmed} of {self.size} bytes stored; upload again to resume)")
        raise BandTimeout(
            f"{self.address} keeps losing upload data at offset {self.confirmed} "
            f"({MAX_RETRIES + 1} retransmissions in a row; {self.confirmed} of {self.size} bytes stored; upload again to resume)")

    async def _transfer(self) -> UploadCommitResponse | None:
        """Send the data, and COMMIT behind it; returns COMMIT's answer if it came while data was owed, else None."""
        client = self.client
        loop = asyncio.get_running_loop()
        while True:
            await self._fill()
            if self.commit is None and self.next_offset >= self.size:
                [self.commit] = await client._send(UploadCommitRequest())
                self.back_since_commit = False
            now = loop.time()
            for old in [s for s in self.stale if s.future.done() or now > s.left_wire + 2 * client._answer_allowance()]:
                self.stale.remove(old)  # its answer came, or never will
                client._abandon(old.request_id, old.future)
            if not self.in_flight:
                return None  # only COMMIT's answer is awaited: _finish_commit waits and retries
            waiting = [s.future for s in self.in_flight]
            if self.commit is not None:
                waiting.append(self.commit.future)
            if not any(f.done() for f in waiting):
                # RFC 6298 (5.3): the timer restarts with each acknowledgement of new data, so frames
                # queued behind others on a slow link (BLE at a small MTU) are not taken for lost.
                due = max(self.in_flight[0].left_wire, self.progress_at) + client._answer_allowance()
                await asyncio.wait(waiting, timeout=max(0.0, due - loop.time()), return_when=asyncio.FIRST_COMPLETED)
            acked = any(s.future.done() for s in self.in_flight)
            if acked:
                self._acks()  # the band answers in order: the data's answers before COMMIT's
            if self.commit is not None and self.commit.future.done():
                outcome = self._commit_answer()
                if outcome is not None:
                    return outcome
                continue
            if not acked:
                # Nothing came back in time: the oldest frame or its answer is lost.
                client.rtt.expired()
                self._stall(silent=True)
                self._go_back_to(self.confirmed)

    def _acks(self) -> None:
        """Handle the data answers that came, oldest first."""
        client = self.client
        for sent in list(self.in_flight):
            if not sent.future.done():
                continue
            self.in_flight.remove(sent)
            answer = sent.future.result()
            client._sample(sent, answer)
            try:
                acked = client._checked(sent.request, answer.message).offset
            except UploadError as exc:
                after_commit = self.commit is not None and sent.seq > self.commit.seq
                if exc.code != Status.NO_UPLOAD or not (sent.early or after_commit):
                    raise  # data sent before our COMMIT found no upload: the band lost it (reboot, another BEGIN)
                if after_commit and not sent.early:
                    # No upload after our COMMIT: it went through (its answer decides), nothing left to send.
                    self.stale.extend(self.in_flight)
                    self.in_flight.clear()
                    self.next_offset = self.confirmed = self.size
                    return
                # Sent behind a BEGIN that had not reached the band (it was sent again): send it again too.
                self._go_back_to(self.confirmed)
                return
            if acked > self.size:
                raise BandAnswerError(f"{self.address} acknowledged offset {acked} of a {self.size}-byte table")
            if self.commit is not None and sent.seq > self.commit.seq and not self.commit.future.done():
                # Data stored after our COMMIT, whose answer (due first) did not come: that COMMIT was lost,
                # or found bytes missing (had it committed, this data would be NO_UPLOAD). A new one follows the data.
                self.client._abandon(self.commit.request_id, self.commit.future)
                self.commit = None
            if acked > self.confirmed:
                self.stalls = 0
                self.confirmed = acked
                self.progress_at = answer.at
                self._report()
            if acked < sent.end:
                # The band did not store this frame: an earlier one was lost. Go back.
                self._stall(silent=False)
                self._go_back_to(self.confirmed)
                return
            self.clean += 1
            if self.clean >= GROW_AFTER and self.chunk < self.best_chunk:
                self.chunk, self.clean = min(self.best_chunk, max(self.chunk + MIN_CHUNK, self.chunk * 5 // 4)), 0
            elif self.clean >= GROW_AFTER and self.frames_ahead < self.window:
                self.frames_ahead, self.clean = self.frames_ahead + 1, 0
        # Frames the band has stored although their own answers did not come (yet): nothing to wait for.
        for sent in [s for s in self.in_flight if s.end <= self.confirmed]:
            self.in_flight.remove(sent)
            self.stale.append(sent)

    # ---------------------------------------------------------------- commit

    def _commit_answer(self) -> UploadCommitResponse | None:
        """COMMIT's answer came: its response, or None when it found bytes missing (they go again, then a new COMMIT)."""
        commit = self.commit
        assert commit is not None and commit.future.done()
        answer = commit.future.result()
        try:
            response = self.client._checked(commit.request, answer.message)
        except UploadError as exc:
            # BAD_OFFSET: bytes were missing. NO_UPLOAD to a COMMIT sent before BEGIN's answer: BEGIN had not
            # reached the band (it was sent again), so neither had any of the data sent with it.
            if not (exc.code == Status.BAD_OFFSET or (exc.code == Status.NO_UPLOAD and commit.early)):
                raise
            self.client._abandon(commit.request_id, commit.future)
            self.commit = None
            if not self.back_since_commit:
                # The band had handled every frame sent before COMMIT, yet bytes were missing: the
                # unanswered ones (the last ones) were lost. Go back now rather than at their timeout.
                self._stall(silent=False)
                self._go_back_to(self.confirmed)
            return None
        assert isinstance(response, UploadCommitResponse)
        self.client._sample(commit, answer)
        self.commit_retried = commit.sends > 1
        return response

    async def _finish_commit(self) -> UploadCommitResponse:
        """Wait for COMMIT's answer, sending it again (same id) while none comes within the commit timeout.

        A commit whose answer was lost and that the band no longer remembers (NO_UPLOAD,
        or no answer at all) is recognised by INFO showing this table active.
        """
        client = self.client
        loop = asyncio.get_running_loop()
        while True:
            commit = self.commit
            assert commit is not None
            deadline = max(commit.first_sent, loop.time() - client._answer_allowance(commit.request)) + client.commit_timeout
            try:
                while not commit.future.done():
                    due = min(deadline, commit.left_wire + client._answer_allowance(commit.request))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(commit.future), max(0.0, due - loop.time()))
                        break
                    if loop.time() >= deadline:
                        raise BandTimeout(f"no answer from {self.address} to UPLOAD_COMMIT (verify and store) within "
                                          f"{client.commit_timeout:g} s ({commit.sends} tries) (is it a HandCue band, powered and in range?)")
                    await client._resend(commit)
                outcome = self._commit_answer()
            except (UploadError, BandTimeout) as exc:
                if isinstance(exc, UploadError) and exc.code != Status.NO_UPLOAD:
                    raise
                self.commit_retried = True
                return await client._commit_fallback(self.data, self.crc, exc)
            if outcome is not None:
                return outcome
            commit_answer = await self._transfer()  # BAD_OFFSET: the missing bytes again, then a new COMMIT
            if commit_answer is not None:
                return commit_answer

    def forget(self) -> None:
        """Stop waiting for every answer still owed (their ids are held while they may come)."""
        for sent in self.in_flight + self.stale + ([self.commit] if self.commit else []):
            self.client._abandon(sent.request_id, sent.future)
        self.in_flight, self.stale, self.commit = [], [], None
