"""Linear-variance noise schedule with ``add_noise`` and a reverse ``step`` (diffusers-style).

Steps are 1-based: ``t = 1..T``. Index 0 of every table holds t = 0 (``alpha_bar_0 = 1``). Inference may run
more reverse steps than T (:meth:`NoiseSchedule.reverse_timesteps`); a step t > T uses step T's coefficients.
"""

from __future__ import annotations

import math

import torch


def reverse_step_count(steps: int, multiplier: float = 1.0, count: int | None = None) -> int:
    """T' = ``count`` if given, else round(n*T) for n = ``multiplier`` with halves rounded up (n=1.25, T=10 -> 13)."""
    if count is not None:
        return count
    return int(math.floor(multiplier * steps + 0.5 + 1e-9))


class NoiseSchedule:
    """``1 - alpha_bar_t = s * (alpha_min + (t-1)/(T-1) * (alpha_max - alpha_min))`` (DESIGN §1).

    ``first_beta`` (e.g. 1e-5, as the reference code) overwrites ``beta_1`` and recomputes
    ``alpha_bar`` as the cumulative product of ``1 - beta``; ``None`` keeps the paper's formula.
    """

    def __init__(self, steps: int, noise_min: float, noise_max: float, noise_scale: float,
                 first_beta: float | None = None) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.steps = steps
        self.first_beta = first_beta
        frac = torch.linspace(0.0, 1.0, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
        variance = noise_scale * (noise_min + frac * (noise_max - noise_min))  # 1 - alpha_bar_t, t = 1..T
        alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), 1.0 - variance])
        betas = torch.zeros(steps + 1, dtype=torch.float64)
        betas[1:] = 1.0 - alpha_bar[1:] / alpha_bar[:-1]
        if first_beta is not None:
            betas[1] = first_beta
            alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1.0 - betas[1:], dim=0)])
        self.betas = betas  # (T+1,)
        self.alpha_bar = alpha_bar  # (T+1,)
        alphas = 1.0 - betas
        prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        one_minus = (1.0 - alpha_bar).clamp_min(1e-30)
        # posterior q(x_{t-1} | x_t, x_0) = N(coef_x0 * x_0 + coef_xt * x_t, posterior_variance)
        self.posterior_coef_x0 = prev.sqrt() * betas / one_minus
        self.posterior_coef_xt = alphas.sqrt() * (1.0 - prev) / one_minus
        self.posterior_variance = betas * (1.0 - prev) / one_minus
        for table in ("posterior_coef_x0", "posterior_coef_xt", "posterior_variance"):
            getattr(self, table)[0] = 0.0

    def reverse_timesteps(self, multiplier: float = 1.0, count: int | None = None) -> list[int]:
        """The steps inference runs, in order: ``T', T'-1, ..., 1`` with T' = :func:`reverse_step_count` (like a
        diffusers scheduler's ``set_timesteps``); empty when T' = 0.

        T' may exceed T (n > 1): a step t > T reuses step T's coefficients in :meth:`add_noise` / :meth:`step`
        (the tables are indexed at ``min(t, T)``), while a denoiser's step embedding sees the actual t, as in the
        reference code.
        """
        return list(range(reverse_step_count(self.steps, multiplier, count), 0, -1))

    def _at(self, table: torch.Tensor, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """Gather ``table[min(t, T)]`` as a ``(B, 1)`` (or scalar) tensor in ``like``'s dtype/device."""
        t = torch.as_tensor(t, device=table.device).clamp(max=self.steps).long()
        values = table[t].to(device=like.device, dtype=like.dtype)
        return values.unsqueeze(-1) if values.ndim == 1 else values

    def noise_std(self, t: torch.Tensor | int, scale: torch.Tensor | float | None = None) -> torch.Tensor:
        """``sqrt(1 - alpha_bar_t)``, or ``sqrt(scale * (1 - alpha_bar_t))`` with a noise-scale factor."""
        t = torch.as_tensor(t).clamp(max=self.steps).long()
        variance = 1.0 - self.alpha_bar[t]
        if scale is not None:
            scale = torch.as_tensor(scale, dtype=variance.dtype)
            variance = variance.reshape(variance.shape + (1,) * max(scale.ndim - variance.ndim, 0)) * scale
        return variance.sqrt()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int,
                  scale: torch.Tensor | float | None = None) -> torch.Tensor:
        """Sample ``q(x_t | x_0) = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps``; x0, noise: (B, d); t: (B,) or int.

        ``scale`` (a float or ``(B, 1)`` tensor in (0, 1]) multiplies the noise variance per row:
        ``v = scale * (1 - alpha_bar_t)``, ``x_t = sqrt(1 - v) x_0 + sqrt(v) eps``. With the paper's schedule
        ``1 - alpha_bar_t`` is proportional to s, so this is the same step run with ``s' = scale * s``
        (``ddrm.dynamic_scale``). ``None`` (the default) is the plain schedule, bit for bit.
        """
        if scale is None:
            return self._at(self.alpha_bar.sqrt(), t, x0) * x0 + self._at((1.0 - self.alpha_bar).sqrt(), t, x0) * noise
        variance = self._at(1.0 - self.alpha_bar, t, x0) * torch.as_tensor(scale, dtype=x0.dtype, device=x0.device)
        return (1.0 - variance).sqrt() * x0 + variance.sqrt() * noise

    def step(self, x0_pred: torch.Tensor, t: torch.Tensor | int, x_t: torch.Tensor) -> torch.Tensor:
        """Posterior mean ``mu~_t(x_t, x0_pred)`` = x_{t-1} without sampled noise; t > T reuses step T."""
        return self._at(self.posterior_coef_x0, t, x_t) * x0_pred + self._at(self.posterior_coef_xt, t, x_t) * x_t

    def describe(self) -> dict[str, float]:
        """Numbers worth logging: the noise std at t = 1 and t = T and whether beta_1 was overwritten."""
        return {
            "noise_std_t1": float(self.noise_std(1)),
            "noise_std_tT": float(self.noise_std(self.steps)),
            "first_beta": float(self.betas[1]),
            "first_beta_overwritten": self.first_beta is not None,
        }
