"""DiffRec (Wang et al., "Diffusion Recommender Model", SIGIR 2023): Gaussian diffusion on the user's
interaction vector x_0 ∈ {0,1}^I.

Forward: the linear-variance schedule ``1 - alpha_bar_t = s * linspace(noise_min, noise_max)`` over
``t = 1..T`` (the same :class:`~ddrm.diffusion.schedule.NoiseSchedule` as DDRM; ``model.diffusion_steps``,
``model.noise_scale``, ``model.noise_min``, ``model.noise_max``). Denoiser: an MLP on
``[dropout(x_t), step embedding]`` through ``model.hidden_dims`` (tanh) back to I, predicting x_0.
Training: t uniform on 1..T, loss = mean over items of (x_0 - x̂_0)², weighted by SNR(t-1) - SNR(t)
(``model.reweight``; weight 1 at t = 1), averaged over the batch's users. Uniform t replaces the
reference code's importance sampling of t. Inference: start from x_0 itself (``model.sampling_steps``
= 0) or from x_0 noised to that step, then T posterior-mean steps (no sampled noise); the result scores
all items.

``train.precision: bf16`` (:mod:`ddrm.precision`): the denoiser (step projection and MLP) runs under bf16
autocast in training and at every reverse step, and its output is cast back to fp32, so the noising, the
MSE and its weights, the posterior-mean steps and the scores are fp32.
"""

from __future__ import annotations

from typing import Literal

import scipy.sparse as sp
import torch
from pydantic import Field, model_validator
from torch import nn

from ..diffusion.denoiser import mlp, sinusoidal_embedding
from ..diffusion.schedule import NoiseSchedule
from ..registry import register_model
from ..params import Flag
from .base import VectorModel, VectorModelParams


class DiffRecParams(VectorModelParams):
    """DiffRec: a diffusion model over the user's interaction vector; ``hidden_dims`` are the denoiser's widths."""

    name: Literal["diffrec"] = "diffrec"
    hidden_dims: tuple[int, ...] = Field(default=(600, 200), min_length=1)
    diffusion_steps: int = Field(default=5, ge=1)  # T (every evaluation runs T reverse steps per user)
    noise_scale: float = Field(default=0.005, gt=0)  # s, 1 - alpha_bar_t = s * linspace(noise_min, noise_max)
    noise_min: float = Field(default=0.005, gt=0)
    noise_max: float = Field(default=0.01, gt=0)
    sampling_steps: int = Field(default=0, ge=0)  # inference: noise the user's vector to this step first (0: none)
    reweight: Flag = True  # weight the x0-MSE of step t by SNR(t-1) - SNR(t)
    step_emb_dim: int = Field(default=10, ge=2)  # sinusoidal step-embedding width

    @model_validator(mode="after")
    def _schedule_fits(self) -> "DiffRecParams":
        if self.noise_min > self.noise_max:
            raise ValueError(f"noise_min {self.noise_min} must be <= noise_max {self.noise_max}")
        if self.noise_scale * self.noise_max >= 1:
            raise ValueError(f"noise_scale * noise_max = {self.noise_scale * self.noise_max} must be < 1")
        if self.sampling_steps > self.diffusion_steps:
            raise ValueError(f"sampling_steps {self.sampling_steps} must be <= diffusion_steps {self.diffusion_steps}")
        return self


@register_model("diffrec", DiffRecParams)
class DiffRec(VectorModel):
    supports_bf16 = True

    def __init__(self, config: DiffRecParams, n_users: int, n_items: int, train: sp.csr_matrix) -> None:
        super().__init__(config, n_users, n_items, train)
        self.schedule = NoiseSchedule(config.diffusion_steps, config.noise_min, config.noise_max,
                                      config.noise_scale)
        self.step_proj = nn.Linear(config.step_emb_dim, config.step_emb_dim)
        self.net = mlp([n_items + config.step_emb_dim, *[int(h) for h in config.hidden_dims], n_items], "tanh")
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                nn.init.normal_(module.bias, std=0.001)
        alpha_bar = self.schedule.alpha_bar.float()
        snr = alpha_bar / (1.0 - alpha_bar).clamp_min(1e-12)  # (T+1,), index 0 unused
        weights = torch.ones_like(snr)
        weights[2:] = snr[1:-1] - snr[2:]
        self.register_buffer("step_weights", weights, persistent=False)

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(B, I)`` noisy vectors and ``(B,)`` steps -> predicted x_0 ``(B, I)``, fp32 (under bf16 the layers run
        in bf16 and the output is cast back)."""
        with self.autocast(x_t.device):
            step = self.step_proj(sinusoidal_embedding(t, self.config.step_emb_dim))
            x_t = nn.functional.dropout(x_t, self.config.dropout, training=self.training)
            x0_hat = self.net(torch.cat([x_t, step], dim=-1))
        return x0_hat.float()

    def loss(self, users: torch.Tensor) -> torch.Tensor:
        x0 = self.rows(users)
        t = torch.randint(1, self.schedule.steps + 1, (len(users),), device=x0.device)
        x_t = self.schedule.add_noise(x0, torch.randn_like(x0), t)
        mse = (self.denoise(x_t, t) - x0).pow(2).mean(dim=1)
        if self.config.reweight:
            mse = self.step_weights[t] * mse
        return mse.mean()

    @torch.no_grad()
    def reverse(self, x0: torch.Tensor) -> torch.Tensor:
        """Inference from the user vectors ``(B, I)``: optional forward noising, then T posterior-mean steps."""
        x = x0
        if self.config.sampling_steps > 0:
            generator = torch.Generator().manual_seed(0)
            noise = torch.randn(x0.shape, generator=generator).to(x0.device)
            x = self.schedule.add_noise(x0, noise, self.config.sampling_steps)
        for step in range(self.schedule.steps, 0, -1):
            t = torch.full((len(x),), step, device=x.device, dtype=torch.long)
            x = self.schedule.step(self.denoise(x, t), step, x)
        return x

    @torch.no_grad()
    def scorer(self):
        return lambda users: self.reverse(self.rows(users))
