"""MFH: Learning to Memorize Feature Hallucination for one-shot image generation."""
