"""Celery side of the service: the app, its tasks, and the dispatcher that sends them."""
