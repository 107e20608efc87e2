"""Benchmarks of a running server: offline RTFx and latency, and real-time streams held."""
