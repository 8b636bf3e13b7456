"""inventory models."""
