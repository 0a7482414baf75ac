"""A surrogate trainer: an analytic, deterministic stand-in for a real trainer with a known optimum.

It lets evolution be tested, demonstrated and benchmarked in seconds. The fitness is a function of the
hyps' positions in the default search space (``hyps/meta.yaml`` around ``hyps/hyp.scratch-low.yaml``):
a deficit ``D >= 0`` that is 0 at a target hyp turns into quality ``q = exp(-D)`` and then into mAPs in
realistic ranges, so ``evolve.contract.fitness`` applies unchanged. Landscapes:

- ``smooth``: an ill-scaled bowl with coupled keys (lr0 with momentum, mosaic with scale, ...).
- ``rugged``: the bowl plus cosine ripples on every key, giving many local optima.
- ``rotated``: the bowl in a random rotated, ill-conditioned basis, so every key interacts.
- ``noisy``: the smooth bowl observed with Gaussian noise (deterministic per hyp, seed and training seed).

Two inputs outside the default space scale the quality, so that runs exercising them have something to
select: an ``optimizer`` in the hyps (``OPTIMIZER_QUALITY``, an evolved optimizer gene) and the data set
(``cfg.data``: a factor in [1 - DATA_SPREAD, 1] drawn from its file name, so that each of several data
sets scores differently). Neither is there by default, and then nothing changes.

The seed picks the landscape instance (target position, rotation, ripple phases) as well as the noise,
the simulated durations and the injected failures, so a run is reproducible end to end.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import PurePath
from typing import Any

import numpy as np

from evolve.config.trial import LANDSCAPES, SurrogateOptions, TrialConfig
from evolve.contract import Metrics
from evolve.errors import ConfigError
from evolve.search.space import SearchSpace

LOGGER = logging.getLogger(__name__)

DEFAULT_NOISE = 0.02
MAP50_95_MAX = 0.6  # a good small detector on an easy set; keeps the numbers looking like real runs

# How much each key matters: the curvature of the deficit along that key in normalised units. Learning
# rate, momentum and the geometric augmentations dominate real YOLO runs; hue jitter and flips barely move.
SENSITIVITY: dict[str, float] = {
    "lr0": 25.0, "lrf": 5.0, "momentum": 20.0, "weight_decay": 4.0, "warmup_epochs": 3.0,
    "warmup_momentum": 2.0, "warmup_bias_lr": 2.0, "box": 6.0, "cls": 4.0, "cls_pw": 2.0, "obj": 6.0,
    "obj_pw": 2.0, "anchor_t": 4.0, "hsv_h": 0.5, "hsv_s": 2.0, "hsv_v": 2.0, "degrees": 3.0,
    "translate": 4.0, "scale": 12.0, "shear": 1.5, "flipud": 2.0, "fliplr": 0.5, "mosaic": 12.0,
    "mixup": 3.0, "copy_paste": 3.0,
}
# Pairs whose effects trade off: (a, b, strength, sign). A sign of -1 penalises the difference of the two
# displacements, so moving both together costs less (a higher lr0 wants a lower momentum, and so on).
COUPLINGS: tuple[tuple[str, str, float, float], ...] = (
    ("lr0", "momentum", 12.0, 1.0), ("lr0", "weight_decay", 3.0, -1.0), ("lr0", "warmup_epochs", 2.0, -1.0),
    ("mosaic", "scale", 6.0, -1.0), ("translate", "scale", 2.0, 1.0), ("box", "obj", 3.0, -1.0),
    ("cls", "cls_pw", 1.5, 1.0), ("hsv_s", "hsv_v", 1.0, -1.0), ("mixup", "copy_paste", 1.5, 1.0),
)
# Global scale of the deficit: the base hyp reaches about 75% of the optimum's mAP, random hyps are poor.
DEFICIT_SCALE = 0.18
RIPPLE_AMPLITUDE = 0.015  # rugged: ripple depth relative to the key's sensitivity
RIPPLE_FREQUENCY = (4.0, 7.0)  # rugged: cycles over [0, 1], drawn per key
ROTATED_CONDITION = 100.0  # rotated: ratio of the steepest to the flattest direction


def noise_std(options: SurrogateOptions) -> float:
    """The observation noise of ``options``: only the noisy landscape has any (DEFAULT_NOISE unless set)."""
    if options.landscape != "noisy":
        return 0.0
    return options.noise if options.noise > 0 else DEFAULT_NOISE


OPTIMIZER_QUALITY = {"AdamW": 1.0, "Adam": 0.95, "SGD": 0.85}  # short runs favour the Adam family
DATA_SPREAD = 0.3


def _outside_factor(hyp: Mapping[str, Any], data: str | None) -> float:
    """The quality factor of the optimizer and the data set (1 when neither is given)."""
    factor = OPTIMIZER_QUALITY.get(str(hyp.get("optimizer")), 1.0)
    return factor * (1.0 - DATA_SPREAD * _unit_hash("data", PurePath(data).name)) if data else factor


@lru_cache(maxsize=1)
def default_space() -> SearchSpace:
    """The space the landscapes are defined on: the project's default meta and base hyp."""
    return SearchSpace.load()


def _unit_hash(*parts: Any) -> float:
    """A uniform number in [0, 1) from the parts; stable across processes (unlike ``hash``)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


class Landscape:
    """One instance of a landscape: target position, quadratic form and ripples, fixed by (name, seed)."""

    def __init__(self, name: str, seed: int) -> None:
        if name not in LANDSCAPES:
            raise ConfigError(f"surrogate: landscape must be one of {', '.join(LANDSCAPES)}, got {name!r}")
        space = default_space()
        self.name, self.seed, self.keys = name, seed, list(space.keys)
        n = len(self.keys)
        rng = np.random.default_rng([seed, LANDSCAPES.index(name), 20261122])
        weights = np.array([SENSITIVITY.get(k, 1.0) for k in self.keys])
        self.target = self._draw_target(space, weights, rng)
        index = {k: i for i, k in enumerate(self.keys)}
        matrix = np.diag(weights)
        for a, b, strength, sign in COUPLINGS:
            if a in index and b in index:
                v = np.zeros(n)
                v[index[a]], v[index[b]] = 1.0, sign
                matrix += strength * np.outer(v, v)
        if name == "rotated":
            # Same per-key scale as the bowl, but the curvature lives along random directions with a wide
            # spread of eigenvalues; the trace is kept so the rotated bowl is as hard overall.
            q, _ = np.linalg.qr(rng.standard_normal((n, n)))
            eig = np.geomspace(1.0, ROTATED_CONDITION, n)
            rng.shuffle(eig)
            scale = np.sqrt(weights)
            core = q @ np.diag(eig) @ q.T
            rotated = scale[:, None] * core * scale[None, :]
            matrix = rotated * (np.trace(matrix) / np.trace(rotated))
        self.matrix = DEFICIT_SCALE * matrix
        self.ripple = DEFICIT_SCALE * RIPPLE_AMPLITUDE * weights if name == "rugged" else np.zeros(n)
        self.freq = rng.uniform(*RIPPLE_FREQUENCY, size=n)

    @staticmethod
    def _draw_target(space: SearchSpace, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The optimum: displaced from the base by less along steep keys, kept off the bounds and rounded.

        Keys at a bound in the base (degrees 0, mosaic 1) move inwards; the target is snapped to what
        ``decode`` can produce, so the optimum is exactly reachable by a hyp file.
        """
        base = np.array(space.encode(space.base))
        size = rng.uniform(0.4, 1.0, size=len(base)) * np.minimum(0.3, 0.3 / np.sqrt(weights))
        sign = np.where(rng.random(len(base)) < 0.5, -1.0, 1.0)
        sign = np.where(base < 0.05, 1.0, np.where(base > 0.95, -1.0, sign))
        target = np.clip(base + sign * size, 0.03, 0.97)
        return np.array(space.encode(space.decode(target.tolist())))

    def deficit(self, u: np.ndarray) -> float:
        """How far position ``u`` is from the optimum, in quality-log units; 0 exactly at the target."""
        d = u - self.target
        value = float(d @ self.matrix @ d)
        if self.ripple.any():
            value += float(np.sum(self.ripple * (1.0 - np.cos(2.0 * math.pi * self.freq * d))))
        return value


@lru_cache(maxsize=64)
def landscape(name: str, seed: int = 0) -> Landscape:
    """The (cached) landscape instance for ``name`` and ``seed``."""
    return Landscape(name, seed)


def _position(hyp: Mapping[str, float]) -> np.ndarray:
    return np.array(default_space().encode(hyp))


def quality(hyp: Mapping[str, float], name: str = "smooth", seed: int = 0) -> float:
    """Noise-free quality in (0, 1] of ``hyp``; 1 exactly at the optimum. ``noisy`` uses the smooth bowl."""
    return math.exp(-landscape(name, seed).deficit(_position(hyp)))


def _maps(q: float) -> tuple[float, float]:
    """(mAP50, mAP50-95) for quality q: mAP50 runs ahead of mAP50-95 as it does on real detectors."""
    map50_95 = MAP50_95_MAX * min(1.0, max(0.0, q))
    return min(0.99, 1.5 * map50_95 + 0.02 * math.sqrt(max(q, 0.0))), map50_95


def true_fitness(hyp: Mapping[str, float], name: str = "smooth", seed: int = 0) -> float:
    """The noise-free fitness of ``hyp`` (what a perfectly repeatable training run would score)."""
    map50, map50_95 = _maps(quality(hyp, name, seed))
    return Metrics(map50=map50, map50_95=map50_95).with_fitness().fitness


def optimum(landscape: str, space: SearchSpace | None = None,
            seed: int = 0) -> tuple[dict[str, float], float]:
    """The optimal hyp of a landscape instance and its noise-free fitness (for regret).

    Frozen keys come from ``space``'s base (the default space when None); the optimum is defined over
    the default space's evolved keys.
    """
    inst = _landscape_for(landscape, seed)
    hyp = dict((space or default_space()).base)
    hyp.update(default_space().decode(inst.target.tolist()))
    return hyp, true_fitness(hyp, landscape, seed)


def _landscape_for(name: str, seed: int) -> Landscape:
    # ``optimum``'s parameter is called ``landscape`` (the agreed interface) and hides the function there.
    return landscape(name, seed)


def _hyp_id(hyp: Mapping[str, float]) -> tuple:
    return default_space().genome_key(default_space().encode(hyp))


def _curve_tau(u: np.ndarray, keys: list[str], epochs: int) -> float:
    """Time constant of the learning curve: low lr0 and heavy augmentation converge more slowly."""
    pos = dict(zip(keys, u))
    frac = 0.12 + 0.25 * (0.75 - pos.get("lr0", 0.75)) + 0.08 * pos.get("mosaic", 1.0) \
        + 0.04 * pos.get("warmup_epochs", 0.6) + 0.05 * pos.get("mixup", 0.0)
    return epochs * min(0.6, max(0.05, frac))


def _epoch_metrics(q: float, frac: float, epoch: int, seconds: float, noise: float) -> Metrics:
    map50, map50_95 = _maps(q * frac)
    map50_95 = max(0.0, map50_95 + noise)
    map50 = min(0.99, max(map50_95, map50 + noise))
    return Metrics(
        precision=round(0.3 + 0.6 * q * frac, 5), recall=round(0.2 + 0.6 * q * frac, 5),
        map50=map50, map50_95=map50_95,
        box_loss=0.02 + 0.06 * (1 - q * frac), obj_loss=0.01 + 0.04 * (1 - q * frac),
        cls_loss=0.005 + 0.02 * (1 - q * frac), epochs=epoch, seconds=seconds, status="ok",
    ).with_fitness()


def train(hyp: Mapping[str, float], cfg: TrialConfig,
          report: Callable[[int, Metrics], Any] | None = None) -> Metrics:
    """Simulate training ``hyp`` for ``cfg.epochs`` epochs; ``report(epoch, metrics)`` after each epoch.

    ``epoch`` counts completed epochs (1..epochs) and equals ``metrics.epochs``. The last report and the
    return value are the same metrics. Raises RuntimeError for the injected failures.
    """
    trial_cfg = TrialConfig.from_any(cfg)
    scfg = trial_cfg.surrogate
    hid = _hyp_id(hyp)
    inst = landscape(scfg.landscape, scfg.seed)
    u = _position(hyp)
    q = math.exp(-inst.deficit(u)) * _outside_factor(hyp, trial_cfg.data)
    epochs = cfg.epochs
    tau = _curve_tau(u, inst.keys, epochs)
    noise = 0.0
    if noise_std(scfg) > 0:
        # Box-Muller from two hashed uniforms: the same hyp and seed always see the same noise.
        # The training seed is part of it, as in a real run: a validation with a new seed sees new noise.
        u1 = max(_unit_hash("noise1", hid, scfg.seed, trial_cfg.seed), 1e-12)
        u2 = _unit_hash("noise2", hid, scfg.seed, trial_cfg.seed)
        # Fitness is about 1.05 x mAP50-95 here, so this noise on mAP50-95 gives noise_std on fitness.
        noise = noise_std(scfg) / 1.05 * math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)
    duration = scfg.seconds * (1.0 + scfg.seconds_spread * (2.0 * _unit_hash("time", hid, scfg.seed) - 1.0))
    fail_at = None
    if _unit_hash("fail", hid, scfg.seed) < scfg.failure_rate:
        fail_at = max(1, (epochs + 1) // 2)
    start = time.monotonic()
    metrics = Metrics()
    for epoch in range(1, epochs + 1):
        if duration > 0:
            time.sleep(duration / epochs)
        if fail_at is not None and epoch == fail_at:
            raise RuntimeError(f"surrogate: injected failure at epoch {epoch} (failure_rate "
                               f"{scfg.failure_rate:g}, seed {scfg.seed})")
        frac = (1 - math.exp(-epoch / tau)) / (1 - math.exp(-epochs / tau))
        metrics = _epoch_metrics(q, frac, epoch, time.monotonic() - start, noise * frac)
        if report is not None:
            report(epoch, metrics)
    LOGGER.debug("surrogate %s seed %d: fitness %.4f", scfg.landscape, scfg.seed, metrics.fitness)
    return metrics
