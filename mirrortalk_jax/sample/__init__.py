"""Samplers: turn a trained denoiser or velocity field into motion."""
