"""bumble's virtual controller, with the fixes each role needs on a virtual link.

* :class:`CentralController` - for a central (the companion's host, or any host
  attaching to a served controller): a working LE Create Connection Cancel and an
  HCI Reset that really resets.
* :class:`BandController` - for a peripheral (the band): its scan response reaches
  scanners on the link.
"""

from __future__ import annotations

import asyncio
import dataclasses

from bumble import hci, ll
from bumble.controller import Controller


class CentralController(Controller):
    """bumble's virtual controller with two fixes a central needs.

    * LE Create Connection Cancel: bumble's controller acknowledges it but keeps the
      connection pending and never reports the cancellation, so
      ``Device.connect(timeout=...)`` hangs after its timeout and every later
      connection attempt is refused (and the stale one may complete later).  Here
      the pending connection is dropped and an LE Connection Complete event with
      status Unknown Connection Identifier follows, as the spec requires.
    * HCI Reset: bumble's controller ignores it.  Here it drops connections (the peer
      sees a supervision timeout), scanning, advertising and any pending
      connection, so a new host process attaching to a served controller (see
      :mod:`ble_stack.served`) starts clean and a band connected to the previous host is freed.
    """

    def on_hci_le_create_connection_cancel_command(self, command: hci.HCI_LE_Create_Connection_Cancel_Command) -> hci.HCI_StatusReturnParameters:
        """Cancel the pending connection and report it as failed."""
        pending = self.pending_le_connection
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        failure = hci.HCI_LE_Connection_Complete_Event(
            status=hci.HCI_UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
            connection_handle=0,
            role=hci.Role.CENTRAL,
            peer_address_type=pending.peer_address.address_type,
            peer_address=pending.peer_address,
            connection_interval=0,
            peripheral_latency=0,
            supervision_timeout=0,
            central_clock_accuracy=0,
        )
        # Scheduled so that it reaches the host after the Command Complete event.
        asyncio.get_running_loop().call_soon(self.send_hci_packet, failure)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    def on_hci_reset_command(self, command: hci.HCI_Reset_Command) -> hci.HCI_StatusReturnParameters:
        """Reset: forget connections, scanning, advertising, pending connection."""
        self.drop_host_state()
        return super().on_hci_reset_command(command)

    def drop_host_state(self) -> None:
        """Drop what the (gone or resetting) host had set up, without HCI events."""
        for peer_address, connection in list(self.le_connections.items()):
            connection.send_ll_control_pdu(ll.TerminateInd(hci.HCI_CONNECTION_TIMEOUT_ERROR))
            del self.le_connections[peer_address]
        self.pending_le_connection = None
        self.le_scan_enable = False
        self.le_legacy_advertiser.stop()
        for advertising_set in self.advertising_sets.values():
            advertising_set.stop()
        self.advertising_sets.clear()


class BandController(Controller):
    """A bumble virtual controller that also carries its scan response on the link.

    bumble's :class:`~bumble.controller.Controller` puts only the advertising data in
    the advertising PDUs it sends on a :class:`~bumble.link.LocalLink` and answers an
    active scan with a copy of that data, so whatever the host configured as scan
    response data never reaches a scanner.  This subclass appends the configured scan
    response data to each advertising PDU sent on the link (only on the link: the
    HCI side still sees two separate, <= 31-byte payloads).
    """

    def send_advertising_pdu(self, packet: ll.AdvertisingPdu) -> None:
        """Send ``packet`` on the link, with the scan response data appended."""
        if isinstance(packet, ll.AdvExtInd):
            for adv_set in self.advertising_sets.values():
                if adv_set.enabled and adv_set.address == packet.advertiser_address:
                    extra = bytes(adv_set.scan_response_data)
                    packet = dataclasses.replace(packet, data=packet.data + extra)
                    break
        elif isinstance(packet, ll.AdvInd):
            extra = bytes(self.le_legacy_advertiser.scan_response_data)
            packet = dataclasses.replace(packet, data=packet.data + extra)
        super().send_advertising_pdu(packet)
