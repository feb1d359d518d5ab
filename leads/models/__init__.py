"""Models: adaptable layers, backbones, methods (``METHODS``), rollout and the ``Forecaster``."""
