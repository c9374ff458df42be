"""DreamTalk: the diffusion denoiser (exact port and its trainable wrapper), the style-aware lip expert and the style predictor."""
