"""Batch jobs: SLURM / LSF scripts rendered from `jobs/templates/`, checked, submitted and followed."""
