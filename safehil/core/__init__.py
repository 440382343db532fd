"""Plumbing with no domain in it: seeding, device, distributed helpers, atomic writes, checkpoint I/O,
one-line errors (`run_main`), locks, and the formula guard of CSV files a person opens.
"""
