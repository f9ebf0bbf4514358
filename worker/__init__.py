"""Celery worker and beat: thin task wrappers over shared/."""
