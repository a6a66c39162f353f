"""susl: semi-unsupervised learning with deep generative models."""

__version__ = "0.1.0"
