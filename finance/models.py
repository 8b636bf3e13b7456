"""finance models."""
