"""Evaluation metrics and procedures from the literature."""
