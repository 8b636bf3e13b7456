"""Nursing tables (placeholder; filled by the nursing work)."""
