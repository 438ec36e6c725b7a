"""The FastGAN backbone (Liu et al. 2021) for memcore."""
