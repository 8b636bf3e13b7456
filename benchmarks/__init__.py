"""Reproducible performance runs (`make bench`). See benchmarks/README.md."""
