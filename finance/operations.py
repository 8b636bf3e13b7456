"""Service-task operations of finance (registered as finance.<verb>)."""
