"""Benchmarks (not tests): `python -m bench.engine` runs the peers' reference conversation
through Loa's production path. See bench/README.md."""
