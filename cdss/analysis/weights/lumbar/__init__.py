"""Shipped lumbar segmentation weights (cdss-lumbar-seg.pt) and their manifest.json."""
