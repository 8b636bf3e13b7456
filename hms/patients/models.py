"""Master patient index models (being written)."""
