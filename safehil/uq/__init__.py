"""Uncertainty and explanation: MC-dropout sampling and its scores, saliency maps and the pixel-reveal
masks.
"""
