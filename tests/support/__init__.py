"""Helpers that start real services for integration tests."""
