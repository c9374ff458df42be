"""Models. Each one exposes `loss(batch, rng, train) -> (loss, metrics)`; the trainer knows nothing else.

Parameters carry *logical* axis names as metadata (`nnx.with_partitioning`). They are placed by the trainer's
jitted init (`out_shardings` from the rules table), so a model can also be built outside any mesh, in tests
and tools: eager sharding at variable creation is switched off.
"""

import flax

# The process-wide default, not `nnx.use_eager_sharding(False)`: that is a per-thread context, and models are
# also built in worker threads (the web demo's request handlers, Beam's workers).
flax.config.update("flax_always_shard_variable", False)
