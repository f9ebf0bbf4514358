"""Database models, enums and session handling (schema `notify`)."""
