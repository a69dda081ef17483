"""Handing admitted requests to the workers and their results back: ``dispatcher`` (the bounded queue,
round robin with credit, re-dispatch) and ``collector`` (one thread per result ring).
"""
