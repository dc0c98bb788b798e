"""The vocabulary several layers share, defined once: control-plane errors, detector messages, event types.

It imports only ``configs/``; every other package may import it (tests/unit/test_import_direction.py).
"""
