"""memoryGAN for memcore (Kim, Kim & Kim, ICLR 2018)."""
