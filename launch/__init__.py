"""launch: Slurm job scripts rendered from the same YAML configs, and their submission."""
