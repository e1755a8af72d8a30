"""Benchmarks behind ``mmcaps bench``."""
