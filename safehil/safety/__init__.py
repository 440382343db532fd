"""The safety cascade: two models + uncertainty + disagreement, Learn-then-Test risk control,
certificates re-run from their evidence (certificate.py), scoring image files with checkpoints
alone, and the ONNX deployment bundle.
"""
