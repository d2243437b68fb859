"""Bluetooth LE plumbing shared by the band simulator and the companion.

Building a bumble host on a virtual link or an HCI transport, the virtual
controllers, and the paced link live here once; ``firmware_sim`` and
``companion`` both import this package, and it imports neither.
"""
