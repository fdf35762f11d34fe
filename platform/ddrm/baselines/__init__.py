"""Standalone baselines (``model.name``), trained on their own (no DDRM) and scored by the same full-ranking
evaluation, each file registering itself (:mod:`ddrm.registry` finds them). The vector models (CDAE, Mult-VAE, DiffRec)
have ``loss(users)`` on a batch of user ids (``batch_kind = BatchKind.USERS``); AdaGCL trains on BPR triples
(``bpr_sampling = "interaction"``) with its own ``training_step``. EASE, ItemKNN and MostPop are closed form
(``batch_kind = BatchKind.NONE``, :mod:`.closed_form`): fitted once, evaluated at epoch 0. All have ``scorer()``
and derive from :class:`ddrm.loop.ModelBase`.
"""
