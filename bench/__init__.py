"""Benchmarks of L104 Node against direct calls to the simulator and a plain nginx hop.

Run with `python -m bench` (or `make bench`); see `python -m bench --help`.
"""
