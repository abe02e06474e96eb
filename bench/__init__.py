"""Benchmarks of the EMM service: each module runs with ``python -m bench.NAME``.

Nothing in the product imports this package; see ``bench/README.md``.
"""
