"""Prefect layer: flows and tasks that call ``sanitize``; nothing in ``sanitize`` imports it."""

from flows.sanitize_flow import sanitize_flow

__all__ = ["sanitize_flow"]
