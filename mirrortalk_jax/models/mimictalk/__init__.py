"""MimicTalk: the in-context flow-matching audio-to-motion model (ICS-A2M)."""
