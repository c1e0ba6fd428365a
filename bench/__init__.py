"""Benchmarks (run directly, e.g. `make bench`); not part of the product."""
