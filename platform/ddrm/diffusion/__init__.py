"""DDRM's diffusion pieces: the noise schedule, the denoisers and the model that wraps a backend."""

from .denoiser import MLPDenoiser
from .schedule import NoiseSchedule

__all__ = ["MLPDenoiser", "NoiseSchedule"]
