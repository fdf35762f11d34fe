"""DDRM wrapping a backend: training loss (Alg. 1) and inference (Alg. 2), DESIGN §1."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from ..backends.base import Backend
from ..config import DDRMConfig
from ..loop import ModelBase
from ..precision import PRECISIONS, autocast
from .denoiser import build_denoiser
from .schedule import NoiseSchedule


def row_mean_operator(train: sp.csr_matrix) -> torch.Tensor:
    """Coalesced sparse ``(U, I)`` tensor whose rows average the user's training items (rows sum to 1)."""
    binary = (train > 0).astype(np.float32)
    degree = np.asarray(binary.sum(axis=1)).ravel()
    inv = np.zeros_like(degree)
    inv[degree > 0] = 1.0 / degree[degree > 0]
    mean = sp.csr_matrix(sp.diags(inv) @ binary, dtype=np.float32)
    mean.sort_indices()
    coo = mean.tocoo()
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(indices, torch.from_numpy(coo.data), size=coo.shape, check_invariants=False).coalesce()


class DDRM(ModelBase):
    """Two denoisers around a backend's final embeddings.

    With ``freeze_backend`` the backend's embeddings are computed once and stored as buffers
    (no propagation per batch); otherwise the backend is a submodule fine-tuned jointly.

    ``precision`` (``train.precision``): ``bf16`` runs the denoisers' forward passes (training and every
    reverse step of inference) under bf16 autocast; their outputs are cast back to fp32, so the losses,
    the posterior-mean steps and the scores are fp32, and parameters / optimiser state stay fp32
    (see :mod:`ddrm.precision`).
    """

    def __init__(self, config: DDRMConfig, backend: Backend, train: sp.csr_matrix, seed: int = 0,
                 precision: str = "fp32") -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
        self.config = config
        self.seed = seed
        self.precision = precision
        self.schedule = NoiseSchedule(config.steps, config.noise_min, config.noise_max, config.noise_scale,
                                      config.first_beta)
        dim = backend.config.dim
        self.item_denoiser = build_denoiser(config, dim)
        self.user_denoiser = build_denoiser(config, dim) if config.denoise_users else None
        self.register_buffer("history_mean", row_mean_operator(train), persistent=False)
        if config.freeze_backend:
            with torch.no_grad():
                user_emb, item_emb = self._embeddings_of(backend)
            self.register_buffer("frozen_user_emb", user_emb.detach().clone())
            self.register_buffer("frozen_item_emb", item_emb.detach().clone())
            self.backend = None
        else:
            self.backend = backend

    def backend_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The backend's final ``(U, d)``, ``(I, d)`` embeddings (frozen buffers or live)."""
        if self.backend is None:
            return self.frozen_user_emb, self.frozen_item_emb
        return self._embeddings_of(self.backend)

    def _embeddings_of(self, backend: Backend) -> tuple[torch.Tensor, torch.Tensor]:
        """``backend``'s final embeddings, or with ``ddrm.propagation_layers`` its ego embeddings propagated."""
        if self.config.propagation_layers is None:
            return backend.embeddings()
        return backend.propagated_embeddings(self.config.propagation_layers)

    def training_noise_scale(self, batch: int, device: torch.device) -> torch.Tensor | None:
        """Per-embedding noise-scale factors ``s'/s`` for training, ``(B, 1)`` in (0, 1], or None.

        With ``ddrm.dynamic_scale`` every noised embedding gets its own ``s' ~ U(0, s]``, i.e. its noise
        variance ``1 - alpha_bar_t`` is multiplied by ``s'/s``, so the denoisers see a range of noise levels
        below the configured one. Without it (and always at inference) the configured s is used: None.
        """
        if not self.config.dynamic_scale:
            return None
        return 1.0 - torch.rand(batch, 1, device=device)  # U(0, 1]

    def denoise(self, denoiser: nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``denoiser(x_t, t, cond)`` at ``self.precision``, returned as fp32 ``(B, d)``.

        x_t, cond: (B, d) fp32; t: (B,) steps. Under bf16 the denoiser's matmuls run in bf16 (autocast) and
        its output is cast to fp32 here, so everything downstream (losses, posterior steps, scores) is fp32.
        """
        with autocast(self.precision, x_t.device):
            out = denoiser(x_t, t, cond)
        return out.float()

    def add_training_noise(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x_t ~ q(x_t | x_0)`` for training (with ``dynamic_scale``: a random s' per row)."""
        scale = self.training_noise_scale(len(x0), x0.device)
        return self.schedule.add_noise(x0, torch.randn_like(x0), t, scale=scale)

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """``mean( sigmoid(s_ui)^gamma * (lambda*BPR + (1-lambda)*(mse_u+mse_i)/2) )`` over the batch."""
        cfg = self.config
        all_users, all_items = self.backend_embeddings()
        e_u, e_i, e_j = all_users[users], all_items[pos], all_items[neg]
        t = torch.randint(1, cfg.steps + 1, (len(users),), device=e_u.device)
        x_i = self.add_training_noise(e_i, t)
        hat_i = self.denoise(self.item_denoiser, x_i, t, e_u)  # fp32 (bf16 inside under train.precision bf16)
        mse = (hat_i - e_i).pow(2).mean(-1)
        if self.user_denoiser is not None:
            x_u = self.add_training_noise(e_u, t)
            hat_u = self.denoise(self.user_denoiser, x_u, t, e_i)
            mse = (mse + (hat_u - e_u).pow(2).mean(-1)) / 2
        else:
            hat_u = e_u
        pos_score = (hat_u * hat_i).sum(-1)
        neg_score = (hat_u * e_j).sum(-1)
        bpr = nn.functional.softplus(neg_score - pos_score)  # -log sigmoid(pos - neg)
        per_sample = cfg.bpr_weight * bpr + (1.0 - cfg.bpr_weight) * mse
        if cfg.reweight_power != 0:
            per_sample = torch.sigmoid(pos_score).detach().pow(cfg.reweight_power) * per_sample
        loss = per_sample.mean()
        if self.backend is not None and self.backend.config.weight_decay > 0:
            ego = (self.backend.user_emb(users).pow(2).sum() + self.backend.item_emb(pos).pow(2).sum()
                   + self.backend.item_emb(neg).pow(2).sum())
            loss = loss + self.backend.config.weight_decay * 0.5 * ego / len(users)
        return loss

    def start_noise(self, n_users: int, dim: int, device: torch.device) -> torch.Tensor:
        """Deterministic inference noise ``(U, d)`` from the run seed (independent of chunking)."""
        generator = torch.Generator().manual_seed(self.seed + 7919)
        return torch.randn(n_users, dim, generator=generator).to(device)

    @torch.no_grad()
    def history_means(self) -> torch.Tensor:
        """``(U, d)``: mean backend embedding of each user's training items (zeros without history)."""
        _, all_items = self.backend_embeddings()
        return self.history_mean @ all_items

    @torch.no_grad()
    def denoise_users(self, users: torch.Tensor, start_mean: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Alg. 2 for a chunk of users: ``(B,)`` -> denoised interest embeddings ``(B, d)``.

        start_mean: (B, d) mean of the users' training items; noise: (B, d) standard normal.
        Start from the mean (or from the noise alone with ``inference_start: noise``), noise it to step T,
        then run the posterior-mean steps t = T'..1 of :meth:`NoiseSchedule.reverse_timesteps` (T' = round(n*T)
        or ``inference_steps``) with the item denoiser conditioned on the user's original embedding. Steps
        t > T reuse step T's coefficients; the step embedding sees the actual t, as in the reference code.
        T' = 0 returns the start itself (the no-denoiser ablation).
        """
        cfg = self.config
        all_users, _ = self.backend_embeddings()
        e_u = all_users[users]
        timesteps = self.schedule.reverse_timesteps(cfg.inference_multiplier, cfg.inference_steps)
        if cfg.inference_start == "noise":
            x = noise
        else:
            if not timesteps:
                return start_mean
            x = self.schedule.add_noise(start_mean, noise, cfg.steps)
        for step in timesteps:
            t = torch.full((len(users),), step, device=x.device, dtype=torch.long)
            x = self.schedule.step(self.denoise(self.item_denoiser, x, t, e_u), step, x)
        return x

    @torch.no_grad()
    def scorer(self):
        """A ``users (B,) -> scores (B, I)`` function: denoised interest embedding . every item.

        Call in eval mode (dropout off); the start noise is fixed by the seed, so scores do not
        depend on how users are chunked.
        """
        _, all_items = self.backend_embeddings()
        all_items = all_items.detach()
        means = self.history_means()
        noise = self.start_noise(means.shape[0], all_items.shape[1], all_items.device)

        def score(users: torch.Tensor) -> torch.Tensor:
            return self.denoise_users(users, means[users], noise[users]) @ all_items.T

        return score
