"""Writes of the generation app: teachers, runs, work items and samples."""
