"""The master's front doors for clients: ``unix`` (the Unix socket, msgpack frames), ``http`` (the HTTP
API) and ``metrics`` (Prometheus). Each turns a client's request into a Job through the one intake.
"""
