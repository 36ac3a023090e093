"""Climate data: the CAM5-like generator, the TC/AR labeller, the published file layouts, statistics."""
