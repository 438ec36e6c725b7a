"""Fast Weight Painters for memcore: see README.md."""
