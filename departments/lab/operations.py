"""Service-task operations of lab (registered as lab.<verb>)."""
