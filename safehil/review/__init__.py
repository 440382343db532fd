"""The operator's side: the editable review page and Label Studio's import/export formats.
"""
