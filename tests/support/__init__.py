"""Test support: a fake model server and helpers shared by the engine and target tests."""
