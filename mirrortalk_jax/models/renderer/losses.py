"""The training objective every trainable renderer shares (ours and the PIRenderer port): self-reenactment.

    losses = RenderLosses(config.loss, rngs)            # owns the discriminator when the config asks for one
    loss, metrics = losses(fake, real, weight, warped=warped_source)

Terms (weights in `config.loss`, 0 switches a term off):
  l1, ms_ssim       pixel terms on the final frame (objectives/image_reconstruction.py)
  warp              the same pixel terms on the source warped by the predicted flow alone (PIRenderer's warp
                    stage; it shapes the flow before the decoder learns to repair it)
  perceptual        L1 between VGG19 features (relu1_1..relu5_1) of fake and real frames, as PIRenderer trains;
                    the network is converted from user-supplied torchvision weights (tools/convert_vgg.py) and
                    given as the renderer's frozen part `model.perceptual_net`
  feature_matching  a perceptual term that needs no pretrained weights: L1 between discriminator features of
                    fake and real frames, the discriminator being trained here with the renderer (pix2pixHD)
  adversarial       non-saturating GAN loss with the PatchGAN discriminator

One optimizer trains renderer and discriminator together: the generator terms see the discriminator through
stop_gradient (its weights get no gradient from them) and the discriminator's own loss sees the fake frames
through stop_gradient (the renderer gets no gradient from it), so a single backward pass gives each network
exactly its own objective's gradient. A learning-rate multiplier for the discriminator is a `train.param_groups`
entry (`losses/discriminator`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from mirrortalk_jax.models.renderer.discriminator import PatchDiscriminator
from mirrortalk_jax.objectives import image_reconstruction as rec

WEIGHT_KEYS = ("l1", "ms_ssim", "warp", "perceptual", "feature_matching", "adversarial")


def default_config(*, ms_ssim_scales: int = 3, discriminator: tuple[int, ...] = (32, 64, 128)
                   ) -> ml_collections.ConfigDict:
    """Loss weights and settings; adversarial and feature matching off (switch on for sharper frames)."""
    return ml_collections.ConfigDict({
        "l1": 1.0, "ms_ssim": 1.0, "ms_ssim_scales": ms_ssim_scales, "warp": 0.5, "perceptual": 0.0,
        "feature_matching": 0.0, "adversarial": 0.0, "discriminator": tuple(discriminator)})


def _frozen(module: nnx.Module) -> nnx.Module:
    """A copy of `module` whose weights are constants to autodiff (stop_gradient on every state leaf)."""
    graphdef, state = nnx.split(module)
    return nnx.merge(graphdef, jax.tree.map(jax.lax.stop_gradient, state))


def to_unit(frames: jax.Array) -> jax.Array:
    """uint8 frames -> float32 in [-1, 1], the renderers' range."""
    return frames.astype(jnp.float32) / 127.5 - 1.0


def check_perceptual(config: ml_collections.ConfigDict, perceptual_net: nnx.Module | None) -> None:
    """A renderer config asking for the perceptual term must name its network (and vice versa it is unused)."""
    if "loss" in config and float(config.loss.get("perceptual", 0.0)) > 0 and perceptual_net is None:
        raise ValueError("model.loss.perceptual > 0 needs model.perceptual_net: a VGG19 converted from torchvision "
                         "weights with tools/convert_vgg.py (nothing is downloaded)")


class RenderLosses(nnx.Module):
    def __init__(self, config: ml_collections.ConfigDict, rngs: nnx.Rngs):
        unknown = set(config) - set(WEIGHT_KEYS) - {"ms_ssim_scales", "discriminator"}
        if unknown:
            raise ValueError(f"unknown renderer loss settings {sorted(unknown)}; known: "
                             f"{sorted(WEIGHT_KEYS) + ['discriminator', 'ms_ssim_scales']}")
        # A tuple, not a dict: module attributes are part of the graph definition, which must hash (compile once).
        self.weight_items = tuple((k, float(config.get(k, 0.0))) for k in WEIGHT_KEYS)
        if any(w < 0 for w in self.weights.values()):
            raise ValueError(f"renderer loss weights must be >= 0, got {self.weights}")
        self.ms_ssim_scales = int(config.get("ms_ssim_scales", 3))
        if self.weights["feature_matching"] > 0 and self.weights["adversarial"] == 0:
            raise ValueError("loss.feature_matching compares discriminator features, and the discriminator only "
                             "learns from loss.adversarial: set adversarial > 0 too (or feature_matching = 0)")
        needs_critic = self.weights["adversarial"] > 0
        self.discriminator = (PatchDiscriminator(tuple(config.discriminator), rngs) if needs_critic else None)

    def _pixel(self, fake: jax.Array, real: jax.Array) -> dict[str, jax.Array]:
        out = {"l1": rec.l1(fake, real)}
        if self.weights["ms_ssim"] > 0:
            out["ms_ssim"] = rec.ms_ssim_loss(fake, real, self.ms_ssim_scales)
        return out

    @property
    def weights(self) -> dict[str, float]:
        return dict(self.weight_items)

    def __call__(self, fake: jax.Array, real: jax.Array, weight: jax.Array, *, warped: jax.Array | None = None,
                 perceptual_net: nnx.Module | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """fake (B, H, W, 3) in [-1, 1], real (B, H, W, 3) uint8 or in [-1, 1], weight (B,) (0: padding),
        warped: the source warped by the flow alone (B, H, W, 3), or None; perceptual_net: the frozen feature
        network of the perceptual term (images in [-1, 1] -> feature list). -> (scalar loss, metrics)."""
        real = to_unit(real) if real.dtype == jnp.uint8 else real.astype(jnp.float32)
        w = self.weights
        terms = {k: rec.weighted_mean(v, weight) for k, v in self._pixel(fake, real).items()}
        loss = w["l1"] * terms["l1"] + w["ms_ssim"] * terms.get("ms_ssim", 0.0)
        if warped is not None and w["warp"] > 0:
            warp_terms = self._pixel(warped, real)
            terms["warp_l1"] = rec.weighted_mean(warp_terms["l1"], weight)
            warp_loss = terms["warp_l1"]
            if "ms_ssim" in warp_terms:
                terms["warp_ms_ssim"] = rec.weighted_mean(warp_terms["ms_ssim"], weight)
                warp_loss = w["l1"] * warp_loss + w["ms_ssim"] * terms["warp_ms_ssim"]
            loss = loss + w["warp"] * warp_loss
        if w["perceptual"] > 0:
            if perceptual_net is None:
                raise ValueError("loss.perceptual > 0 but no perceptual network was given (model.perceptual_net)")
            features = perceptual_net(jnp.concatenate([fake, real]))
            n = fake.shape[0]
            terms["perceptual"] = rec.weighted_mean(
                rec.feature_l1([f[:n] for f in features], [jax.lax.stop_gradient(f[n:]) for f in features]), weight)
            loss = loss + w["perceptual"] * terms["perceptual"]
        if self.discriminator is not None:
            critic = _frozen(self.discriminator)
            fake_features, fake_logits = critic(fake)
            if w["feature_matching"] > 0:
                real_features, _ = critic(real)
                terms["feature_matching"] = rec.weighted_mean(rec.feature_l1(fake_features, real_features), weight)
                loss = loss + w["feature_matching"] * terms["feature_matching"]
            if w["adversarial"] > 0:
                terms["adversarial"] = rec.weighted_mean(rec.gan_generator(fake_logits), weight)
                _, real_logits = self.discriminator(real)
                _, detached_logits = self.discriminator(jax.lax.stop_gradient(fake))
                terms["discriminator"] = rec.weighted_mean(rec.gan_discriminator(real_logits, detached_logits),
                                                           weight)
                terms["real_score"] = rec.weighted_mean(jnp.mean(jax.nn.sigmoid(real_logits), (1, 2, 3)), weight)
                loss = loss + w["adversarial"] * (terms["adversarial"] + terms["discriminator"])
        psnr = -10.0 * jnp.log10(jnp.maximum(jnp.mean(jnp.square((fake - real) / 2.0), axis=(1, 2, 3)), 1e-10))
        terms["psnr"] = rec.weighted_mean(psnr, weight)
        return loss, terms
