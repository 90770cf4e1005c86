"""Scorers: text (filled in by its own change)."""
