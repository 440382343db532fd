"""Configuration: the dataclass <-> command-line layer, the Config bases every script builds on, run
folders, and the papers' presets and named recipes (each value with its source).
"""
