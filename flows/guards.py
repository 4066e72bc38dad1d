"""Which steps an approval gate covers: ``tocsin.guards``, shared with validation."""

from __future__ import annotations

from tocsin.guards import guarded_ids, guarding_gate, leaf_steps

__all__ = ["guarded_ids", "guarding_gate", "leaf_steps"]
