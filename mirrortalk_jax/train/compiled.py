"""`compile_training`: the one setup of a model's sharded train state and jitted steps on a mesh.

The trainer, the AOT tool (train/aot.py) and the step benchmarks all start here, so what they time or compile is
exactly what training runs:

    setup = compile_training(config, factory, mesh)
    state = setup.init(jax.random.key(0))                  # created sharded, no unsharded copy
    state, metrics = setup.train_step(state, batch, rng)   # jitted, state donated
    setup.train_step.lower(setup.abstract_state(), abstract_batch, rng).compile()   # ahead of time
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import ml_collections
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mirrortalk_jax.data import pipeline
from mirrortalk_jax.models.nn.sharding import with_activation_sharding
from mirrortalk_jax.runs import checkpointing
from mirrortalk_jax.train import mesh as mesh_lib
from mirrortalk_jax.train import param_groups, sharding_guard
from mirrortalk_jax.train import state as state_lib


@dataclasses.dataclass(frozen=True)
class CompiledTraining:
    training: state_lib.Training
    mesh: Mesh
    abstract: state_lib.TrainState  # shapes and dtypes of the state (jax.ShapeDtypeStruct leaves)
    shardings: state_lib.TrainState  # a NamedSharding per leaf
    batch_sharding: NamedSharding
    replicated: NamedSharding
    train_step: Callable  # jitted (state, batch, rng) -> (state, metrics), the state donated
    eval_step: Callable  # jitted (state, batch, rng) -> metrics, EMA parameters when kept
    batch_axes: tuple[str, ...] = ("data", "fsdp")  # mesh axes of the logical batch axis (the rules' "batch")
    traced: Callable[[Callable], Callable] = lambda step: step  # wraps a step so it traces under the rules

    def global_batch(self, local_batch: dict) -> dict[str, jax.Array]:
        """This process's batch as global arrays split over `batch_axes`."""
        return pipeline.to_global_batch(local_batch, self.mesh, self.batch_axes)

    def init(self, rng: jax.Array) -> state_lib.TrainState:
        """A fresh state, created directly in its sharded layout."""
        return jax.jit(self.training.init, out_shardings=self.shardings)(rng)

    def abstract_state(self) -> state_lib.TrainState:
        """The state's shapes with their shardings: the target of a restore or of ahead-of-time lowering."""
        return checkpointing.abstract_with_shardings(self.abstract, self.shardings)

    def sample_step(self, sampler: Callable) -> Callable:
        """Jitted (state, batch, rng) -> (B, L, D) motion of `sampler(model, batch, rng)` (sample.generators.eval_sampler)."""
        return jax.jit(self.traced(state_lib.make_sample_step(self.training.graphdef, self.training.use_ema, sampler)),
                       in_shardings=(self.shardings, self.batch_sharding, self.replicated),
                       out_shardings=self.batch_sharding)


def compile_training(config: ml_collections.ConfigDict, factory: Callable[[nnx.Rngs], nnx.Module], mesh: Mesh, *,
                     init_from: tuple[tuple[str, ...], ...] = ()) -> CompiledTraining:
    """The train state and steps of `factory`'s model under `config.train`, sharded on `mesh` by the config's
    logical axis rules. Checks what would otherwise fail late or silently: the batch must divide over the
    data-parallel devices, every `train.param_groups` pattern must match a parameter, and no large parameter
    may stay replicated (`train.max_replicated_param_mb`)."""
    tc = config.train
    rules = mesh_lib.logical_rules(config.mesh.logical_axis_rules)
    batch_axes = mesh_lib.batch_axes(rules)  # the rules' "batch" entry: inputs and activations split over these
    batch_shards = math.prod(mesh.shape[a] for a in batch_axes)
    if tc.batch_size % batch_shards:
        raise ValueError(f"train.batch_size={tc.batch_size} must divide by the {'*'.join(batch_axes)} mesh size "
                         f"{batch_shards} (the logical batch axis)")
    training = state_lib.make_training(factory, tc, init_from=init_from)
    abstract = jax.eval_shape(training.init, jax.random.key(0))
    unmatched = [p for p, n in param_groups.matched_groups(abstract.params, training.param_groups).items() if n == 0]
    if unmatched:
        raise ValueError(f"train.param_groups patterns {unmatched} match no parameter of model {config.model.name!r}")
    shardings = state_lib.state_shardings(abstract, mesh, rules)
    sharding_guard.check_parameters_sharded(abstract.params, shardings.params, mesh,
                                            max_replicated_mb=tc.max_replicated_param_mb)
    batch_sharding = pipeline.batch_sharding(mesh, batch_axes)
    replicated = NamedSharding(mesh, PartitionSpec())
    traced = _tracing(config, mesh, rules)
    train_step = jax.jit(traced(state_lib.make_train_step(training.graphdef, training.tx, training.schedule,
                                                          tc.ema_decay)),
                         in_shardings=(shardings, batch_sharding, replicated),
                         out_shardings=(shardings, replicated), donate_argnums=0)
    eval_step = jax.jit(traced(state_lib.make_eval_step(training.graphdef, training.use_ema)),
                        in_shardings=(shardings, batch_sharding, replicated), out_shardings=replicated)
    return CompiledTraining(training, mesh, abstract, shardings, batch_sharding, replicated, train_step, eval_step,
                            batch_axes, traced)


def _tracing(config: ml_collections.ConfigDict, mesh: Mesh, rules) -> Callable[[Callable], Callable]:
    """How the steps are traced: with the mesh and logical rules active, so the models' activation sharding
    constraints apply (`mesh.constrain_activations`, default on), or as they are."""
    if not config.mesh.get("constrain_activations", True):
        return lambda step: step
    return lambda step: with_activation_sharding(step, mesh, rules)
