"""Campaigns: a dataset's whole tuned comparison (searches in dependency order, then tables) as one spec."""
