"""Benchmarks, one module per area; each returns records (and writes JSON lines) via bench.common."""
