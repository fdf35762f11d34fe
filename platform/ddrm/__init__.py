"""DDRM: plug-in diffusion denoising of user/item embeddings for any recommender backend."""

__version__ = "0.1.0"
