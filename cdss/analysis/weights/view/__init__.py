"""Shipped view classifier weights (see docs/models/view.md)."""
