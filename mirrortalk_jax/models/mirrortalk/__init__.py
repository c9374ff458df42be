"""MirrorTalk: the hierarchically modulated DiT generator, the SDSE style encoder and the motion (lip-sync) expert."""
