"""The package's version: the one definition, read by pyproject.toml, the CLI, ``stats`` and /metrics."""

__version__ = "0.1.0"
