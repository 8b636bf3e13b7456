"""opd models."""
