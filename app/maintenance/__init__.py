"""Upkeep the dashboard needs while it serves: `flask maintenance prune` (retention)."""
