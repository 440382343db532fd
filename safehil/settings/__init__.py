"""Configuration: the papers' presets and reproduce.py's scales (each value with its source, one name
per setting), named recipes, the dataclass <-> command-line layer, the Config bases every script
builds on, and run folders.
"""
