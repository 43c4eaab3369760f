"""Benchmarks behind `make bench` (run from the checkout: `python -m bench.lifecycle`)."""
