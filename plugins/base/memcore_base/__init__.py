"""DCGAN-style backbones, GAN losses and DiffAugment for memcore."""
