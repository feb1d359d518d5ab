"""Physics: the systems, their equations and solvers; installed as ``leads.envs``."""
