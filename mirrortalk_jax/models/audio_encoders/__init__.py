"""HuBERT and wav2vec 2.0 speech encoders (Hugging Face layouts)."""
