"""Handing admitted requests to the workers and their results back: ``dispatcher`` (the bounded queue,
round robin among the workers with a free fetch thread, re-dispatch), ``handle`` (the master's view of one
worker), ``collector`` (one thread per result ring) and ``figures`` (the fetch figures for stats).
"""
