"""One tree of errors: band statuses map to named exceptions, every public one is exported, simulator faults stay apart."""

from __future__ import annotations

import inspect

import pytest
from click.testing import CliRunner

import companion
import companion.errors
import protocol.errors
from companion.cli import cli
from companion.transport import open_transport
from firmware_sim import faults
from protocol.constants import Status
from protocol.errors import STATUS_TEXT, BandError, HandCueError, UploadError, band_error


def _exceptions(module: object) -> set[type[BaseException]]:
    return {value for value in vars(module).values() if inspect.isclass(value) and issubclass(value, BaseException)}


@pytest.mark.parametrize("status", [status for status in Status if status != Status.OK])
def test_every_error_status_has_a_named_exception_and_words(status):
    error = band_error(status, detail=3)
    assert type(error) is not BandError and isinstance(error, BandError)
    assert (error.code, error.detail) == (status, 3)
    assert str(error) == STATUS_TEXT[status] != ""


def test_the_upload_statuses_share_one_exception_and_keep_their_code():
    for status in (Status.TOO_LARGE, Status.NO_UPLOAD, Status.BAD_OFFSET, Status.FLASH_FAILURE):
        error = band_error(status, "reason from the band")
        assert isinstance(error, UploadError) and error.code == status and str(error) == "reason from the band"


def test_an_unknown_status_code_reads_as_a_bad_request():
    error = band_error(200)
    assert isinstance(error, protocol.errors.BadRequestError) and error.code == Status.BAD_REQUEST


def test_every_public_exception_is_a_handcue_error_exported_from_companion():
    public = _exceptions(protocol.errors) | _exceptions(companion.errors)
    assert len(public) == 21
    for error_type in public:
        assert issubclass(error_type, HandCueError), error_type
        assert getattr(companion, error_type.__name__) is error_type
        assert error_type.__name__ in companion.__all__


def test_simulator_faults_are_outside_the_user_facing_tree():
    assert {fault.__name__ for fault in _exceptions(faults)} == {"SimulatorFault", "PowerLoss", "FlashError", "StorageError"}
    for fault in _exceptions(faults):
        assert issubclass(fault, faults.SimulatorFault) and not issubclass(fault, HandCueError)
    with pytest.raises(faults.PowerLoss):  # an `except HandCueError` cannot swallow a power cut
        try:
            raise faults.PowerLoss("cut")
        except HandCueError:
            pytest.fail("a simulated power cut was caught as a HandCue error")


def test_old_import_paths_name_the_same_classes():
    from companion.client import BandTimeout
    from companion.transport import TransportClosed, TransportError
    from firmware_sim.flash import FlashError, PowerLoss
    from firmware_sim.storage import StorageError
    from protocol.messages import MessageError

    assert (BandTimeout, TransportClosed, TransportError) == (companion.BandTimeout, companion.TransportClosed, companion.TransportError)
    assert (FlashError, PowerLoss, StorageError) == (faults.FlashError, faults.PowerLoss, faults.StorageError)
    assert MessageError is protocol.errors.MessageError


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("nope", "'nope' is not a band address; use serial:PATH[?baud=N] or ble:NAME|ble:AA:BB:CC:DD:EE:FF"),
        ("serial:/dev/ttyX?baud=fast", "serial:/dev/ttyX?baud=fast: baud must be a number"),
        ("serial:/dev/ttyX?parity=E", "serial:/dev/ttyX?parity=E: unknown option parity (serial takes baud=)"),
        ("ble:", "'ble:' is not a band address"),
    ],
)
def test_a_bad_address_is_an_address_error_and_one_line_from_the_cli(address, message):
    with pytest.raises(companion.AddressError) as error:
        open_transport(address)
    assert str(error.value).startswith(message)
    result = CliRunner().invoke(cli, ["status", "--to", address])
    assert result.exit_code == 2  # a malformed --to is a usage error (issue 12)
    assert result.output.splitlines()[-1] == f"Error: Invalid value for '--to': {error.value}"
