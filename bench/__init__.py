"""Benchmarks of dropcov-mindspore: ``python bench/run_all.py`` runs them all (see docs/BENCHMARKS.md)."""
