"""Scorers: math (filled in by its own change)."""
