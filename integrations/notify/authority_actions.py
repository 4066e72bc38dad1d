"""notify.draft_breach_notification (being written)."""
