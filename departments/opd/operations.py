"""Service-task operations of opd (registered as opd.<verb>)."""
