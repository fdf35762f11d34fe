"""Data layer: prepared-split IO and validation, raw readers, splitting, noise injection, BPR sampling."""

from .prepared import InteractionData, load_prepared, resolve_data_dir, write_prepared

__all__ = ["InteractionData", "load_prepared", "resolve_data_dir", "write_prepared"]
