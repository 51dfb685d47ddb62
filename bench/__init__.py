"""Benchmark of the orchestration against one process doing the same work.

Run it with ``python -m bench``; docs/benchmark.md has the results.
"""
