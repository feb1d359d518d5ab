"""Run configuration: YAML loading and overrides (``loading``), the typed ``RunConfig`` (``schema``)."""
