"""Synthetic data: the quickstart's long-tailed demo dataset and defective shards for tests."""

from dynamics.demo.data import generate_demo_data
from dynamics.demo.faulty import write_test_shards

__all__ = ["generate_demo_data", "write_test_shards"]
