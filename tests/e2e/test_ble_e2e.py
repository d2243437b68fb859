"""End to end over Bluetooth LE: bleak's public API on the bumble backend, the band on bumble.

In one process both stacks share a bumble LocalLink; across processes the
companion attaches to the virtual controller that `handcue-sim --hci-server`
serves.  Nothing is faked: both sides run full BLE hosts (GAP, ATT/GATT, L2CAP)
over bumble's virtual link layer; only the radio is simulated.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import zlib

import pytest
from bleak import BleakClient, BleakScanner

from ble_stack.addresses import free_tcp_port
from companion import compile_routine, load_routine, read_table, table_timeline
from companion.ble.bumble_backend import BumbleCentral
from companion.client import BandClient
from firmware_sim.local import LocalBleBand
from protocol.constants import DEFAULT_UPLOAD_WINDOW, MAX_FRAME_PAYLOAD, BandState, BleUuid, Hands, TechniqueCode
from protocol.table import CuePattern, PatternSegment, StepRecord, StepTable, encode_table

from ..conftest import SHIPPED

TIMEOUT = 30
ADDRESS = "ble:HandCue-1A2B"


def LocalBand() -> LocalBleBand:
    return LocalBleBand()


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT))


def big_table(steps: int = 200) -> bytes:
    records = [StepRecord(TechniqueCode.COMBING, 2000 + 100 * (i % 7), start_pattern=0) for i in range(steps)]
    return encode_table(StepTable(hands=Hands.LEFT, records=records, patterns=[CuePattern((PatternSegment(100, 80),), "start")], done_pattern=0))


def test_scan_finds_band_with_service_and_battery():
    async def job():
        async with LocalBand() as band, BumbleCentral(link=band.link) as central:
            found = await BleakScanner.discover(timeout=1.0, return_adv=True, backend=central.scanner_backend)
            return [adv for _, adv in found.values() if adv.local_name == "HandCue-1A2B"]

    adverts = run(job())
    assert adverts, "band not seen"
    assert BleUuid.SERVICE in adverts[0].service_uuids
    assert adverts[0].service_data[BleUuid.BATTERY] == bytes([87])


def test_standard_services_through_bleak():
    async def job():
        async with LocalBand() as band, BumbleCentral(link=band.link) as central:
            device = await BleakScanner.find_device_by_name("HandCue-1A2B", timeout=5, backend=central.scanner_backend)
            async with BleakClient(device, backend=central.client_backend) as client:
                return (client.mtu_size, await client.read_gatt_char(BleUuid.BATTERY_LEVEL),
                        await client.read_gatt_char("00002a29-0000-1000-8000-00805f9b34fb"),
                        await client.read_gatt_char("00002a25-0000-1000-8000-00805f9b34fb"))

    mtu, battery, manufacturer, serial_number = run(job())
    assert mtu == 247
    assert battery == bytes([87]) and manufacturer == b"HandCue" and serial_number == b"1A2B"


@pytest.mark.parametrize("routine", SHIPPED)
def test_upload_start_and_trace_equals_inspect_timeline_over_ble(routine):
    data = compile_routine(load_routine(routine))

    async def job(band: LocalBleBand, central: BumbleCentral):
        async with BandClient.open(ADDRESS, ble=central.backend) as client:
            assert client.transport.mtu == 244
            result = await client.upload(data)
            assert (await client.info()).routine_crc32 == zlib.crc32(data) == result.crc32
            await client.start()
            states = [s.state async for s in _until_finished(client)]
            assert states[-1] == BandState.FINISHED
        while band.band.motor.busy:  # the done pattern plays out
            await asyncio.sleep(0)
            band.band.process()

    async def main():
        async with LocalBand() as band, BumbleCentral(link=band.link) as central:
            await job(band, central)
            return band.motor_events()

    assert run(main()) == [e.to_json() for e in table_timeline(read_table(data))]


async def _until_finished(client: BandClient):
    async for status in client.notifications(timeout=5):
        yield status
        if status.state == BandState.FINISHED:
            return


def test_disconnect_mid_upload_then_resume():
    data = big_table(1000)
    assert len(data) > 3 * DEFAULT_UPLOAD_WINDOW * MAX_FRAME_PAYLOAD  # the cut comes while most of it is still to send

    async def main():
        async with LocalBand() as band, BumbleCentral(link=band.link) as central:
            cuts: list[asyncio.Task] = []

            def cut_after_first_ack(confirmed: int, total: int) -> None:
                if 0 < confirmed < total and not cuts:
                    cuts.append(asyncio.ensure_future(band.ble.peripheral.disconnect_all()))

            async with BandClient.open(ADDRESS, ble=central.backend) as client:
                with pytest.raises(Exception, match=r"(?i)disconnect|link lost|not connected") as lost:  # which one depends on timing
                    await client.upload(data, cut_after_first_ack)
            assert "Traceback" not in str(lost.value)
            stored = band.band.storage.upload.offset
            async with BandClient.open(ADDRESS, ble=central.backend) as client:
                result = await client.upload(data)
            return stored, result, band.band.storage.active_table()

    stored, result, active = run(main())
    assert stored > 0
    assert result.resumed_from == stored
    assert active == data


def test_across_processes_through_hci_server(tmp_path):
    port = free_tcp_port()
    trace = tmp_path / "trace.jsonl"
    sim = subprocess.Popen([sys.executable, "-m", "firmware_sim", "--hci-server", f"tcp-server:127.0.0.1:{port}",
                            "--clock", "virtual", "--trace", str(trace)], stdout=subprocess.PIPE, text=True)
    try:
        assert sim.stdout.readline().startswith("ble: HandCue-1A2B")
        scan = subprocess.run([sys.executable, "-c", "from companion.cli import main; main()", "scan", "--json", "--timeout", "1",
                               "--hci", f"tcp-client:127.0.0.1:{port}"], capture_output=True, text=True, timeout=TIMEOUT)
        assert scan.returncode == 0, scan.stderr
        assert [b["name"] for b in json.loads(scan.stdout)] == ["HandCue-1A2B"]
        data = compile_routine(load_routine("nausea-pc6"))

        async def job():
            async with BumbleCentral(hci=f"tcp-client:127.0.0.1:{port}") as central, BandClient.open(ADDRESS, ble=central.backend) as client:
                await client.upload(data)
                await client.start()
                async for _ in _until_finished(client):
                    pass
                await asyncio.sleep(0.2)

        run(job())
    finally:
        sim.terminate()
        sim.stdout.close()
        assert sim.wait(TIMEOUT) == 0
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    motor = [{k: v for k, v in e.items() if k != "event"} for e in events if e["event"] == "motor"]
    assert motor == [e.to_json() for e in table_timeline(read_table(data))]
