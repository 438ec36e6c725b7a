"""SAGAN for memcore: the self-attention block, SAGAN backbones, the attention study."""
