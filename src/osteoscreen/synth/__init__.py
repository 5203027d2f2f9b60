"""Synthetic CT cohorts with known BMD per vertebra."""
