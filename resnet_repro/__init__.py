"""Reproduction of He et al., "Deep Residual Learning for Image Recognition" (arXiv 1512.03385)."""

__version__ = "0.1.0"
