"""Training: losses, metrics, the distributed step and loop, checkpoints."""
