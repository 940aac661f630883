"""Routers of the admin API."""
