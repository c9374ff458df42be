"""Experiment configs (ml_collections): `python -m mirrortalk_jax.main --config=mirrortalk_jax/configs/<name>.py:<variant>`;
each file starts with the command that runs it. Converter specs of released networks are in released/."""
