"""The LAB synthetic data generator: teachers, prompts, pipelines. Imports no Django."""
