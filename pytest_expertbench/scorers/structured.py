"""Scorers: structured (filled in by its own change)."""
