"""Scorers: safety (filled in by its own change)."""
