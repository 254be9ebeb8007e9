"""Metrics: per-case, per-class records and the named reductions over them."""
from .overlap import REDUCTIONS, case_records, confusion, reduce

__all__ = ["REDUCTIONS", "case_records", "confusion", "reduce"]
