"""Benchmarks for tfgate: direct access vs through tfgate (`python -m bench`)."""
