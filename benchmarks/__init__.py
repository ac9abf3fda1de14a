"""Benchmarks and measurements (run as ``python -m benchmarks.<name>``)."""
