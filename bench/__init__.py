"""Benchmarks of the controller on the real Docker engine and the stand-in NVML.

Run with ``python -m bench`` from the repository root (see bench/README.md). Nothing here is
imported by the controller or by the tests; the package only measures them.
"""
