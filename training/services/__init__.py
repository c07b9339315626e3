"""Writes of the training app: jobs and their phases (jobs.py), and one node's torchrun of a phase (nodes.py)."""
