"""Hidden channels for partially observed dynamics (``forecaster.latent_channels``).

When the data hold only part of the state (``data.observe``: an ocean's sea surface height, not
its lower layer), the observed channels alone do not determine their own future. As Ayed, de
Bézenac, Pajot, Brajard & Gallinari (ICASSP 2020) do, the model's state is the observed channels
plus ``m`` hidden ones: they start at a learned encoding of the observed initial state, every
method's network integrates all ``C + m`` channels together, and only the observed ones are scored
and trained on. The encoder is one shared network of the run's backbone (environment-specific
behaviour is the method's), mapping ``[x, 0]`` to ``[·, z]`` on the augmented shape.

Hidden channels live in normalised units; their rate is scaled like the observed channels' typical
rate per unit spread (``rate_scale``), so they evolve on the data's time scale.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from leads.models.adapters import Cond, SharedLayer
from leads.models.backbones import build_backbone


def augmented_shape(state_shape: tuple[int, ...], channels: int) -> tuple[int, ...]:
    """The model's state shape: ``channels`` hidden channels added to the observed ones."""
    return (state_shape[0] + channels, *state_shape[1:])


class LatentEncoder(nn.Module):
    """Infers the hidden channels from observed (normalised) states.

    Args:
        backbone_cfg: the run's ``model:`` section (the encoder uses the same backbone).
        state_shape: the observed shape ``(C, ...)``.
        channels: hidden channels ``m`` (>= 1).
    """

    def __init__(self, backbone_cfg: dict[str, Any], state_shape: tuple[int, ...], channels: int) -> None:
        super().__init__()
        self.observed, self.channels = state_shape[0], channels
        self.net = build_backbone(dict(backbone_cfg), augmented_shape(state_shape, channels), SharedLayer)
        self.register_buffer("rate_scale", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden channels ``(B, m, ...)`` of normalised observed states ``(B, C, ...)``."""
        pad = x.new_zeros(x.shape[0], self.channels, *x.shape[2:])
        env = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.net(torch.cat((x, pad), dim=1), Cond(env))[:, self.observed:]

    def encode_series(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden channels of every state of series ``(B, T, C, ...)``: ``(B, T, m, ...)``."""
        return self(x.flatten(0, 1)).unflatten(0, x.shape[:2])

