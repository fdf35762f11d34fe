"""Denoisers predicting e_0 from ``concat(dropout(x_t), step_emb(t), cond)``."""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """``(B,)`` integer steps -> ``(B, dim)`` [cos | sin] features."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float().unsqueeze(-1) * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class MLPDenoiser(nn.Module):
    """MLP ``in -> d2 -> d1 -> d2 -> d`` for ``hidden_dims = (d1, d2)``, activation after all but the last layer.

    ``in = d (noisy) + step_emb_dim + d (condition)``; input dropout on the noisy embedding only;
    Xavier-normal weights.
    """

    def __init__(self, dim: int, hidden_dims: tuple[int, int] = (100, 1000), activation: str = "sigmoid",
                 dropout: float = 0.5, step_emb_dim: int = 10) -> None:
        super().__init__()
        d1, d2 = hidden_dims
        self.step_emb_dim = step_emb_dim
        self.step_proj = nn.Linear(step_emb_dim, step_emb_dim)
        self.dropout = nn.Dropout(dropout)
        sizes = [2 * dim + step_emb_dim, d2, d1, d2, dim]
        layers: list[nn.Module] = []
        for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(n_in, n_out))
            if k < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                nn.init.normal_(module.bias, std=0.001)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x_t, cond: (B, d); t: (B,) steps -> predicted e_0 (B, d)."""
        step = self.step_proj(sinusoidal_embedding(t, self.step_emb_dim))
        return self.net(torch.cat([self.dropout(x_t), step, cond], dim=-1))
