"""Shipped model weights (package data): one sub-package per analysis, each with a manifest.json."""
