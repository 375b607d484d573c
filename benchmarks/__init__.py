"""Benchmarks that print one JSON object each (not tests): `python -m benchmarks.NAME --json`."""
