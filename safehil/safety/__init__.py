"""The safety cascade: two models + uncertainty + disagreement, Learn-then-Test risk control, scoring
image files with checkpoints alone, and the ONNX deployment bundle.
"""
