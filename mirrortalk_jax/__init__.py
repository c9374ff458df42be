"""mirrortalk_jax: style-preserving, audio-driven talking faces in JAX/Flax."""

__version__ = "0.1.0"
