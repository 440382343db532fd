"""The networks (one registered builder each), the one fit loop with prediction and evaluation, and
resumable grids of independent training tasks.
"""
