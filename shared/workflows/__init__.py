"""Workflows: static ones defined in Python, dynamic ones from the database."""
