"""Training objectives, one module each with one signature, so a config picks one without if-chains."""
