"""Nursing operations (placeholder; filled by the nursing work)."""
