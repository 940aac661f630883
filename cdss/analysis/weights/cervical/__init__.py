"""Shipped cervical foraminal stenosis bundle (ROI detector + STN + classifier); see docs/models/cervical.md."""
