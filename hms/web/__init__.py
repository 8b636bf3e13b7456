"""Web glue shared by every blueprint: the request's database session, the acting user,
error rendering, base templates and navigation."""
