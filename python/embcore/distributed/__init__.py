"""embcore on more than one process: tables sharded over Ray actors, trained parameter-server
style, monitored shard by shard and merged (``pip install "embcore[ray]"``).

- :class:`ShardedModel`: ``train``, ``score``, ``predict``, ``item_embeddings``, ``monitor()``
  (the merged Monitor), ``save``/``load`` (one file per shard and a manifest, resharding on
  load), ``checkpoint_every=``, ``restore()``;
- :func:`shard_of`: the stable placement of an id (the core's 64-bit id hash);
- :func:`snapshot_drift`: ``embcore.analysis.snapshot_drift`` of two sharded snapshots;
- :func:`sharded_factory`: a model factory for the CLI's ``--ray N``.

Ray is imported only when a ShardedModel starts; without it the error names the extra.
docs/distributed.md has the design, the cost model and the multi-node set-up.
"""

from embcore.distributed.sharded import (
    MANIFEST_VERSION,
    ShardedModel,
    ShardFailedError,
    read_checkpoint,
    shard_of,
    sharded_factory,
    snapshot_drift,
)

__all__ = [
    "MANIFEST_VERSION",
    "ShardFailedError",
    "ShardedModel",
    "read_checkpoint",
    "shard_of",
    "sharded_factory",
    "snapshot_drift",
]
