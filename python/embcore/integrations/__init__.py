"""Integrations with other training frameworks (each module imports its framework lazily).

* :mod:`embcore.integrations.torch` — :func:`~embcore.integrations.torch.watch` an
  ``nn.Embedding`` / ``nn.EmbeddingBag``: after each optimizer step the monitor observes the
  rows that step touched.
"""
