"""Small shared helpers: atomic file output, rank-aware logging and progress, the Horovod runtime."""
