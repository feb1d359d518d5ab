"""When a turbulent flow started from rest has forgotten its start: stationarity of its energy.

A trajectory spun up from small random perturbations first grows (instability), may overshoot,
then fluctuates about a statistically steady level. The criterion, per trajectory: the energy is
sampled at a fixed interval and averaged over consecutive windows; the flow is stationary at the
end of the first window where the last ``windows`` window means all lie within ``tol`` of their
own mean (``max − min <= tol · mean``) and the last is at least ``growth`` times the first sample.
Growth or decay across the windows fails it, and so does an overshoot the windows straddle (the
middle mean stands out); the growth factor rejects the quiet months before an instability takes
off, when the energy barely moves (measured: a jet run's 90-day means passed ``tol`` = 0.2 there).
The windows must be long enough that the fluctuations of a steady flow's window means stay inside
``tol`` (docs/ocean.md gives the measured spread). Each trajectory is judged on its own energy
alone, so where it stops does not depend on the batch it was solved in.
"""

from __future__ import annotations

import torch


class StationaryEnergy:
    """The criterion for a batch of trajectories sampled together.

    Args:
        batch: trajectories.
        samples_per_window: energy samples averaged in one window.
        windows: consecutive window means compared (>= 2).
        tol: their allowed relative spread.
        growth: the last window's mean over the first sample, at least (0: no condition).
    """

    def __init__(self, batch: int, samples_per_window: int, windows: int, tol: float, growth: float = 0.0,
                 device: torch.device | str | None = None) -> None:
        if samples_per_window < 1 or windows < 2 or not tol > 0 or not growth >= 0:
            raise ValueError("need samples_per_window >= 1, windows >= 2, tol > 0 and growth >= 0")
        self.samples_per_window, self.windows, self.tol, self.growth = samples_per_window, windows, tol, growth
        self.first: torch.Tensor | None = None
        self.total = torch.zeros(batch, dtype=torch.float64, device=device)
        self.count = 0
        self.means = torch.full((batch, windows), float("nan"), dtype=torch.float64, device=device)
        self.stationary = torch.zeros(batch, dtype=torch.bool, device=device)

    def add(self, energy: torch.Tensor) -> torch.Tensor:
        """Take one energy sample ``(B,)``; return which trajectories became stationary with it
        (at the end of a window; once stationary, a trajectory stays so)."""
        if self.first is None:
            self.first = energy.to(self.total).clone()
        self.total += energy.to(self.total)
        self.count += 1
        if self.count < self.samples_per_window:
            return torch.zeros_like(self.stationary)
        self.means = torch.cat((self.means[:, 1:], (self.total / self.count)[:, None]), dim=1)
        self.total.zero_()
        self.count = 0
        mean = self.means.mean(1)
        spread = self.means.amax(1) - self.means.amin(1)
        grown = self.means[:, -1] >= self.growth * self.first
        now = (spread <= self.tol * mean) & torch.isfinite(spread) & (mean > 0) & grown & ~self.stationary
        self.stationary |= now
        return now
