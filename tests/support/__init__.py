"""Helpers shared by tests in every folder: polling for a condition, reading a child's output until a line."""
