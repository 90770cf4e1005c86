"""pytest-expertbench: model benchmarks as pytest suites, gated against baselines."""

__version__ = "0.1.0"
