"""Reproducible experiments that measure the method on real data (``dynamics experiment ...``)."""
