"""Bluetooth LE plumbing shared by the band simulator and the companion.

Building a bumble host on a virtual link or an HCI transport, the virtual
controllers, and the paced link live here once; ``firmware_sim`` and
``companion`` both import this package, and it imports neither.

* :mod:`ble_stack.hosts` - a bumble host attached to a link, a transport or a spec;
* :mod:`ble_stack.controllers` - the virtual controllers of a central and of a band;
* :mod:`ble_stack.served` - controllers served to hosts in other processes (one per TCP host);
* :mod:`ble_stack.addresses` - random static addresses, free loopback ports.

Which link or transport is always a parameter (:data:`ble_stack.hosts.HostSite`).
"""
