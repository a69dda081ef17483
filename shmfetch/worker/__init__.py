"""The worker process (``process``): takes requests from its ring, fetches and extracts them, and
publishes results. Started as ``python -m shmfetch.worker INDEX`` (``__main__``); ``parentdeath``
ties it to the master before any heavy import.
"""
