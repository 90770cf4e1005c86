"""Scorers: match (filled in by its own change)."""
