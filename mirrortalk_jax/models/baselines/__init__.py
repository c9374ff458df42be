"""Baselines the evaluation compares against."""
