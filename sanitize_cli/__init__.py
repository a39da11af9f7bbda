"""The ``sanitize`` command, above ``flows/`` (it may run the Prefect flow) and the core."""

from sanitize_cli.main import main

__all__ = ["main"]
