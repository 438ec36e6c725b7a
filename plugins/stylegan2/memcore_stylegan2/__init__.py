"""StyleGAN2 + ADA for memcore, in plain PyTorch (no custom CUDA ops, no JIT compilation)."""
__version__ = "0.1.0"
