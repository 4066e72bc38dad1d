"""Tocsin: incident-response runbooks for broker offices, run as Prefect flows.

The public surface is small; import from here rather than from the modules.
Importing ``tocsin`` stays cheap (no Prefect, no pydantic) so that the CLI starts fast.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
