"""Synthetic benchmark data: writers of the official distribution formats (``formats``)."""
