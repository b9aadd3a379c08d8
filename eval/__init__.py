"""Degradation synthesis, quality metrics and benchmarks; usable from every side of the project."""
