"""Shared layers every family builds on: initialisers and native layers, PyTorch-exact layers for the ports, image layers and warping."""
