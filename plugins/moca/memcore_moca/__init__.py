"""MoCA (memory concept attention) block, FastGAN backbone and their tools for memcore."""
