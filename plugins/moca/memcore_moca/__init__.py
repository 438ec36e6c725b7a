"""MoCA (memory concept attention) block and its tools for memcore."""
