"""Standalone baselines (``model.name``), trained instead of backend + DDRM and scored by the same full-ranking
evaluation; importing this package registers every model file. Each model has ``loss(users)`` on a batch of
user ids (``sampling = "users"``), ``scorer()`` and ``data_csr`` input built from the training split.
"""

from . import cdae, diffrec, multivae  # noqa: F401
