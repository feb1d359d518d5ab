"""Training with Lightning: run directories and resume, atomic checkpoints, loggers."""
