"""Configs of released networks that are converted, never trained here (each names its converter command)."""
