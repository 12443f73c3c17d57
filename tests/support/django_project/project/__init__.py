"""A tiny Django project for tests/test_django.py."""
