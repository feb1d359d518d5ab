"""Storage: generating, caching and reading trajectories (HDF5); installed as ``leads.datasets``."""
