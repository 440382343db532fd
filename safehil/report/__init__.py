"""The reproduction report: the works' published numbers, confidence intervals, the verdict rules and
REPORT.md.
"""
