"""Load benchmarks of the scoring service: `python -m bench.run` (or `make bench`)."""
