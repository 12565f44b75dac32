"""Benchmark tooling for cvat-watch: a CVAT export generator, an expat baseline, a load benchmark.

Not part of the installed package; run from the repository root (``python -m benchmarks.bench_load``).
"""
