"""Recommender backends: BPR-trained embedding models that DDRM can wrap; each file registers itself
(:mod:`ddrm.registry` finds them)."""
