"""lab models."""
