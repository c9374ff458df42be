"""The train state, its shardings, and the pure train / eval steps.

The model is split once into a static graphdef and arrays; everything jitted works on a `TrainState` pytree.
Shardings come from the parameters' logical axis names through the rules table, so the state is created
directly in its sharded layout (`jax.jit(init, out_shardings=...)`): no unsharded copy ever exists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mirrortalk_jax.models import registry
from mirrortalk_jax.train import param_groups


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array  # () int32, optimizer steps taken (skipped non-finite steps included)
    params: nnx.State  # trainable parameters (nnx.Param)
    opt_state: optax.OptState
    model_state: nnx.State  # everything else the model holds (batch statistics, ...)
    ema_params: nnx.State | None  # exponential moving average of params, or None when disabled
    nonfinite_streak: jax.Array  # () int32, consecutive steps skipped for a non-finite loss or gradient
    nonfinite_total: jax.Array  # () int32


def make_optimizer(train_config, frozen: tuple[str, ...] = ()) -> tuple[optax.GradientTransformation,
                                                                      optax.Schedule]:
    """AdamW with linear warmup + cosine decay, global-norm gradient clipping, and per-group learning rates
    (`train.param_groups`: (regex, multiplier) pairs; multiplier 0 freezes the group). `frozen` subtrees
    (declared by the model) are never updated, whatever the config says."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=train_config.learning_rate, warmup_steps=train_config.warmup_steps,
        decay_steps=max(train_config.get("decay_steps") or train_config.num_steps, train_config.warmup_steps + 1),
        end_value=train_config.learning_rate * train_config.final_lr_fraction)

    def adamw(multiplier: float) -> optax.GradientTransformation:
        return optax.adamw(lambda step: multiplier * schedule(step), b1=0.9, b2=0.99,
                           weight_decay=train_config.weight_decay)

    tx = optax.chain(optax.clip_by_global_norm(train_config.grad_clip),
                     param_groups.with_param_groups(adamw, all_param_groups(train_config, frozen)))
    return tx, schedule


def all_param_groups(train_config, frozen: tuple[str, ...] = ()) -> tuple[tuple[str, float], ...]:
    """The model's frozen subtrees first (first match wins), then the config's groups."""
    return tuple((f"{subtree}/.*", 0.0) for subtree in frozen) + tuple(train_config.get("param_groups") or ())


@dataclasses.dataclass(frozen=True)
class Training:
    """Everything needed to create, restore and step a model's train state."""

    graphdef: nnx.GraphDef
    init: Callable[[jax.Array], TrainState]
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    param_groups: tuple[tuple[str, float], ...]
    init_from: tuple[tuple[str, ...], ...]  # (subtree, run dir[, source subtree]) to load at a fresh start
    use_ema: bool  # the state keeps EMA parameters (train.ema_decay > 0); evaluation uses them


def make_training(model_factory: Callable[[nnx.Rngs], nnx.Module], train_config, *,
                  init_from: tuple[tuple[str, ...], ...] = ()) -> Training:
    """Builds the optimizer and init function. The model's frozen parts (`registry.frozen_subtrees`) are never
    trained; `init_from` (the parts' runs, `runs.loader.Recipe.init_from`) and the config's `train.init_from`
    are loaded at a fresh start."""
    abstract_model = nnx.eval_shape(lambda: model_factory(nnx.Rngs(0)))
    frozen = registry.frozen_subtrees(abstract_model)
    tx, schedule = make_optimizer(train_config, frozen)
    graphdef, init = make_init(model_factory, tx, train_config.ema_decay > 0)
    init_from = tuple(init_from) + tuple(tuple(x) for x in train_config.get("init_from") or ())
    bad = [x for x in init_from if len(x) not in (2, 3)]
    if bad:
        raise ValueError(f"train.init_from entries are (subtree, run) or (subtree, run, source subtree), got {bad}")
    return Training(graphdef, init, tx, schedule, all_param_groups(train_config, frozen), init_from,
                    use_ema=train_config.ema_decay > 0)


def make_init(model_factory: Callable[[nnx.Rngs], nnx.Module], tx: optax.GradientTransformation,
              use_ema: bool) -> tuple[nnx.GraphDef, Callable[[jax.Array], TrainState]]:
    """Returns the model's static graphdef and `init(rng) -> TrainState` (to be jitted with shardings)."""
    graphdef, _, _ = nnx.split(nnx.eval_shape(lambda: model_factory(nnx.Rngs(0))), nnx.Param, ...)

    def init(rng: jax.Array) -> TrainState:
        _, params, model_state = nnx.split(model_factory(nnx.Rngs(rng)), nnx.Param, ...)
        zero = jnp.zeros((), jnp.int32)
        return TrainState(step=zero, params=params, opt_state=tx.init(params), model_state=model_state,
                          ema_params=params if use_ema else None, nonfinite_streak=zero, nonfinite_total=zero)
    return graphdef, init


def state_shardings(abstract_state: Any, mesh: Mesh, rules) -> Any:
    """NamedShardings for every leaf: annotated parameters (and their optimizer moments) by the rules table,
    everything else (step counters, unannotated leaves) replicated."""
    with nnx.logical_axis_rules(rules):
        specs = nnx.get_partition_spec(abstract_state)

    def named(path, spec):
        try:
            return NamedSharding(mesh, spec)
        except ValueError as e:  # e.g. two dimensions mapped to the same mesh axis by the rules
            raise ValueError(f"parameter {param_groups.path_name(path)}: its logical axes give {spec}, which "
                             f"this mesh cannot use ({e})") from e
    return jax.tree_util.tree_map_with_path(named, specs, is_leaf=lambda x: isinstance(x, PartitionSpec))


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    ema_decay: float) -> Callable:
    """`train_step(state, batch, rng) -> (state, metrics)`, pure: jit it with shardings and donation."""

    def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array):
        rng = jax.random.fold_in(rng, state.step)

        def loss_fn(params):
            # copy=True: fresh Variables in this trace, so layers that update statistics in training
            # (BatchNorm) may mutate them; the originals belong to the enclosing trace.
            model = nnx.merge(graphdef, params, state.model_state, copy=True)
            loss, metrics = model.loss(batch, rng, train=True)
            return loss, (metrics, nnx.state(model, nnx.Not(nnx.Param)))

        (loss, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = state.ema_params
        if ema is not None:
            ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, params)
        # A non-finite loss or gradient skips the update (the counters tell the loop when to give up).
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
        new_state = state.replace(
            step=state.step + 1, params=keep(params, state.params), opt_state=keep(opt_state, state.opt_state),
            model_state=keep(model_state, state.model_state),
            ema_params=None if ema is None else keep(ema, state.ema_params),
            nonfinite_streak=jnp.where(finite, 0, state.nonfinite_streak + 1),
            nonfinite_total=state.nonfinite_total + (~finite).astype(jnp.int32))
        metrics = {**metrics, "loss": loss, "grad_norm": grad_norm, "learning_rate": schedule(state.step),
                   "skipped": (~finite).astype(jnp.float32)}
        return new_state, metrics

    return train_step


def _eval_model(graphdef: nnx.GraphDef, state: TrainState, use_ema: bool) -> nnx.Module:
    params = state.ema_params if (use_ema and state.ema_params is not None) else state.params
    return nnx.merge(graphdef, params, state.model_state)


def make_eval_step(graphdef: nnx.GraphDef, use_ema: bool) -> Callable:
    """`eval_step(state, batch, rng) -> metrics` with the EMA parameters when there are any."""

    def eval_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array):
        loss, metrics = _eval_model(graphdef, state, use_ema).loss(batch, rng, train=False)
        return {**metrics, "loss": loss}

    return eval_step


def make_sample_step(graphdef: nnx.GraphDef, use_ema: bool,
                     sampler: Callable[[nnx.Module, dict[str, jax.Array], jax.Array], jax.Array]) -> Callable:
    """`sample_step(state, batch, rng) -> (B, L, D)` motion generated for held-out windows by
    `sampler(model, batch, rng)` (sample.generators.eval_sampler)."""

    def sample_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array):
        return sampler(_eval_model(graphdef, state, use_ema), batch, rng)

    return sample_step
