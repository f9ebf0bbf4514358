"""The HTTP API: thin FastAPI routes over shared/."""
