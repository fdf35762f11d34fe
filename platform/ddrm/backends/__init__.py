"""Recommender backends; importing this package registers every backend file."""

from . import lightgcn, mf, sgl  # noqa: F401
from .base import Backend

__all__ = ["Backend"]
