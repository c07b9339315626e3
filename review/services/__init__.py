"""Writes of review: opening items for new samples, decisions and their undo, claims, bulk jobs."""
