"""The project's renderer (motion_renderer.py) and what every trainable renderer shares (losses, discriminator)."""
