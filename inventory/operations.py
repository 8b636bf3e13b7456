"""Service-task operations of inventory (registered as inventory.<verb>)."""
