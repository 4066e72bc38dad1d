"""notify.staff and notify.clients (being written)."""
