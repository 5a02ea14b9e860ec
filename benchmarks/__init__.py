"""Benchmarks: scenarios measuring Fibers beside its baselines in the same run (see README.md).

Each module runs on its own (``python -m benchmarks.<name>``); ``fibers bench`` runs them by
scenario name (``benchmarks.suite``).
"""
