"""The frame pipeline: buffers and alignment, the rate schedule, the inference worker and its results."""
