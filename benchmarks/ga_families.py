"""Landscape families of the GA benchmark that are defined only here, beside the surrogate trainer's.

Each family is a fitness ``0.632 * exp(-deficit)`` over the normalised genome of the default search
space (the surrogate's best fitness, so every table reads on one scale), with a known optimum. The
seed picks the instance. ``TUNING`` families may be used to choose the GA's defaults (on seeds 100+);
``HELD_OUT`` families never are, and every family is reported on seeds 0-9.
"""
from __future__ import annotations

import hashlib
import math
import re
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

import hyps
from evolve.search.space import SearchSpace


def _snap(space: SearchSpace, u: np.ndarray) -> np.ndarray:
    """The position of the hyp that ``u`` decodes to, so an optimum is exactly reachable."""
    return np.array(space.encode(space.decode(np.clip(u, 0.0, 1.0).tolist())))


def _displaced(space: SearchSpace, rng: np.random.Generator, std: float) -> np.ndarray:
    """The base moved by N(0, std) on every key (keys at a bound move inwards), kept off the bounds."""
    base = np.array(space.encode(space.base))
    step = np.abs(rng.normal(0.0, std, len(base))) * np.where(rng.random(len(base)) < 0.5, -1.0, 1.0)
    step = np.where(base < 0.05, np.abs(step), np.where(base > 0.95, -np.abs(step), step))
    return _snap(space, np.clip(base + step, 0.03, 0.97))


class HeldOut:
    """A held-out landscape: fitness 0.632 * exp(-deficit) like the surrogate's, optimum known.

    Subclasses set ``self.opt`` (a reachable position) and define ``raw(u)``; the deficit is scaled so
    the base hyp scores 60-80% of the optimum, as good defaults do in practice. ``noise`` is the std of
    Gaussian observation noise in fitness units, the same for the same hyp and seed.
    """

    name = ""
    noise = 0.0
    base_quality = (0.6, 0.8)  # the base hyp scores this fraction of the optimum (drawn per seed)

    def __init__(self, space: SearchSpace, seed: int) -> None:
        self.space, self.seed = space, seed
        self.rng = np.random.default_rng([seed, sum(map(ord, self.name)), 4242])
        self.setup()
        base = np.array(space.encode(space.base))
        floor = self.raw(self.opt)
        self.scale = -math.log(self.rng.uniform(*self.base_quality)) / max(1e-12, self.raw(base) - floor)
        self.floor = floor

    def setup(self) -> None:
        raise NotImplementedError

    def raw(self, u: np.ndarray) -> float:
        raise NotImplementedError

    def fitness(self, hyp: dict[str, float]) -> float:
        u = np.array(self.space.encode(hyp))
        return 0.632 * math.exp(-self.scale * max(0.0, self.raw(u) - self.floor))

    def observe(self, hyp: dict[str, float]) -> float:
        value = self.fitness(hyp)
        if self.noise > 0:
            digest = hashlib.sha256(repr((self.space.genome_key(self.space.encode(hyp)), self.seed)).encode())
            a, b = (int.from_bytes(digest.digest()[i:i + 8], "little") / 2.0**64 for i in (0, 8))
            value += self.noise * math.sqrt(-2.0 * math.log(max(a, 1e-12))) * math.cos(2.0 * math.pi * b)
        return value

    def best(self) -> float:
        return self.fitness(self.space.decode(self.opt.tolist()))


def _quadratic(rng: np.random.Generator, n: int, rank: int = 4) -> np.ndarray:
    """A random ill-scaled quadratic form: log-uniform per-key curvature plus a few coupled directions."""
    weights = np.exp(rng.uniform(math.log(0.5), math.log(25.0), n))
    coupling = rng.normal(0.0, 1.0, (n, rank)) * np.sqrt(weights)[:, None] * 0.5
    return np.diag(weights) + coupling @ coupling.T / rank


class Rastrigin(HeldOut):
    """Rastrigin in a random rotated basis around a shifted optimum: a regular grid of local optima."""

    name = "rastrigin (held out)"

    def setup(self) -> None:
        n = len(self.space)
        self.opt = _displaced(self.space, self.rng, 0.08)
        self.rot, _ = np.linalg.qr(self.rng.standard_normal((n, n)))

    def raw(self, u: np.ndarray) -> float:
        x = self.rot @ (u - self.opt) / 0.1  # one ripple period every 0.1 of the normalised range
        return float(np.sum(x * x + 3.0 * (1.0 - np.cos(2.0 * math.pi * x))))


class Bounds(HeldOut):
    """The optimum sits on a bound for nine keys (degrees, shear, flipud, mixup, copy_paste at 0 as in
    many tuned hyp files; hsv_h, translate, warmup_bias_lr pushed to 0; mosaic at 1)."""

    name = "bounds (held out)"
    LOW = ("degrees", "shear", "flipud", "mixup", "copy_paste", "hsv_h", "translate", "warmup_bias_lr")
    HIGH = ("mosaic",)

    def setup(self) -> None:
        keys, n = self.space.keys, len(self.space)
        self.target = _displaced(self.space, self.rng, 0.1)
        for i, key in enumerate(keys):
            if key in self.LOW:
                self.target[i] = -self.rng.uniform(0.05, 0.3)  # the unconstrained best lies past the bound
            elif key in self.HIGH:
                self.target[i] = 1.0 + self.rng.uniform(0.05, 0.3)
        self.weights = np.exp(self.rng.uniform(math.log(0.5), math.log(25.0), n))
        self.opt = _snap(self.space, np.clip(self.target, 0.0, 1.0))  # separable: clipping is optimal

    def raw(self, u: np.ndarray) -> float:
        return float(np.sum(self.weights * (u - self.target) ** 2))


class Plateaus(HeldOut):
    """A coupled quadratic seen through steps of 1/8 of every range: flat cells, ties everywhere."""

    name = "plateaus (held out)"

    def setup(self) -> None:
        n = len(self.space)
        self.matrix = _quadratic(self.rng, n)
        self.opt = (np.floor(_displaced(self.space, self.rng, 0.1) * 8.0) + 0.5) / 8.0
        self.opt = _snap(self.space, self.opt)

    def raw(self, u: np.ndarray) -> float:
        d = (np.minimum(np.floor(u * 8.0), 7.0) + 0.5) / 8.0 - (np.floor(self.opt * 8.0) + 0.5) / 8.0
        return float(d @ self.matrix @ d)


class Noisy(HeldOut):
    """A coupled quadratic observed with noise of std 0.05 (2.5x the tuned-on ``noisy``)."""

    name = "noise 0.05 (held out)"
    noise = 0.05

    def setup(self) -> None:
        self.matrix = _quadratic(self.rng, len(self.space))
        self.opt = _displaced(self.space, self.rng, 0.1)

    def raw(self, u: np.ndarray) -> float:
        d = u - self.opt
        return float(d @ self.matrix @ d)


class Sparse(HeldOut):
    """Only four random keys matter, each best 0.08-0.2 of its range from the base (random hyps stay poor)."""

    name = "4 genes matter (held out)"

    def setup(self) -> None:
        n = len(self.space)
        base = np.array(self.space.encode(self.space.base))
        self.keys = self.rng.choice(n, size=4, replace=False)
        self.opt = base.copy()
        for i in self.keys:
            step = self.rng.uniform(0.08, 0.2)
            self.opt[i] = base[i] + step if base[i] + step <= 0.97 else base[i] - step
        self.opt = _snap(self.space, np.clip(self.opt, 0.03, 0.97))
        self.weights = self.rng.uniform(5.0, 20.0, 4)

    def raw(self, u: np.ndarray) -> float:
        d = u[self.keys] - self.opt[self.keys]
        return float(np.sum(self.weights * d * d))


class Peaks:
    """Held-out family: Gaussian peaks around the base hyp; the highest one is the global optimum."""

    def __init__(self, space: SearchSpace, seed: int, n_peaks: int = 6) -> None:
        rng = np.random.default_rng([seed, 777])
        self.space = space
        base = np.array(space.encode(space.base))
        n = len(space)
        # The highest peak lies near the base (good defaults sit near good hyps); the others are
        # scattered further to act as decoys.
        spread = np.array([[0.12]] + [[0.25]] * (n_peaks - 1))
        self.centres = np.clip(base + rng.normal(0.0, 1.0, size=(n_peaks, n)) * spread, 0.02, 0.98)
        self.heights = np.concatenate([[1.0], rng.uniform(0.55, 0.85, n_peaks - 1)])
        # Per-peak, per-key widths: a peak is narrow along some keys and broad along others.
        self.widths = rng.uniform(0.25, 0.6, size=(n_peaks, n))

    def fitness(self, hyp: dict[str, float]) -> float:
        u = np.array(self.space.encode(hyp))
        z = ((u - self.centres) / self.widths) ** 2
        # 0.632 is the surrogate's best fitness, so both families read on the same scale.
        return 0.632 * float(np.max(self.heights * np.exp(-0.5 * z.sum(axis=1))))

    observe = fitness

    def best(self) -> float:
        return max(self.fitness(self.space.decode(c.tolist())) for c in self.centres)


class Quadratic(HeldOut):
    """A quadratic bowl around an optimum displaced from the base by N(0, ``distance``) per key.

    ``coupling`` is the rank of the random coupled directions added to the log-uniform per-key
    curvatures (0: separable) and ``strength`` their weight; ``base_quality`` says how good the base is.
    """

    distance = 0.1
    coupling = 4
    strength = 1.0

    def setup(self) -> None:
        n = len(self.space)
        self.matrix = np.diag(np.exp(self.rng.uniform(math.log(0.5), math.log(25.0), n)))
        if self.coupling:
            w = np.sqrt(np.diag(self.matrix))
            c = self.rng.normal(0.0, 1.0, (n, self.coupling)) * w[:, None] * self.strength
            self.matrix = self.matrix + c @ c.T / self.coupling
        self.opt = _displaced(self.space, self.rng, self.distance)

    def raw(self, u: np.ndarray) -> float:
        d = u - self.opt
        return float(d @ self.matrix @ d)


class Far(Quadratic):
    """The defaults are poor: the optimum is N(0, 0.3) per key away and the base scores 15-35% of it."""

    name = "far optimum"
    distance = 0.3
    base_quality = (0.15, 0.35)


class Coupled(Quadratic):
    """Strong coupling: eight dense directions three times as steep as the per-key curvatures."""

    name = "coupled"
    coupling = 8
    strength = 3.0
    distance = 0.15
    base_quality = (0.4, 0.6)


class Near(Quadratic):
    """Good defaults: the optimum is N(0, 0.04) per key away and the base already scores 80-90% of it,
    so only fine steps gain anything."""

    name = "near optimum (held out)"
    distance = 0.04
    base_quality = (0.8, 0.9)


class Separable(Quadratic):
    """No coupling at all: each key can be tuned on its own; the base scores 40-60%."""

    name = "separable (held out)"
    coupling = 0
    distance = 0.15
    base_quality = (0.4, 0.6)


class NoisyFar(Quadratic):
    """Poor defaults and noisy trials: optimum N(0, 0.2) away, base at 30-50%, noise std 0.03."""

    name = "noisy, far (held out)"
    distance = 0.2
    noise = 0.03
    base_quality = (0.3, 0.5)


class Curved(HeldOut):
    """Curved valleys: Rosenbrock-like bananas on random pairs of keys, so the best step direction
    turns as the search moves; the base scores 40-60%."""

    name = "curved valleys (held out)"
    base_quality = (0.4, 0.6)

    def setup(self) -> None:
        n = len(self.space)
        self.opt = _displaced(self.space, self.rng, 0.15)
        self.pairs = self.rng.permutation(n)[: 2 * (n // 2)].reshape(-1, 2)
        self.weights = np.exp(self.rng.uniform(math.log(1.0), math.log(10.0), len(self.pairs)))

    def raw(self, u: np.ndarray) -> float:
        d = (u - self.opt) / 0.2
        a, b = d[self.pairs[:, 0]], d[self.pairs[:, 1]]
        return float(np.sum(self.weights * (0.2 * a * a + 4.0 * (b - a * a + 0.0) ** 2)))


class OptimizerChoice(Quadratic):
    """A categorical gene: the search space evolves ``optimizer`` (AdamW, Adam, SGD, with ``lr0`` in each
    one's range, as ``hyps/meta.yaml`` has it once switched on). Each choice has its own coupled bowl
    around its own optimum, N(0, 0.15) per key from the base, and its own floor: the best choice is one
    of the two the base does not use; the base's own choice adds 0.3-0.6 times the base's distance to its
    bowl's optimum, the third choice 1-2 times. The base (AdamW) scores 30-50% of the optimum, so a
    search that never leaves AdamW cannot get near it."""

    name = "optimizer choice (held out)"
    evolve_optimizer = True
    distance = 0.15
    base_quality = (0.3, 0.5)

    def setup(self) -> None:
        super().setup()
        self.cat = self.space.keys.index("optimizer")
        levels = self.space.levels[self.cat]
        base = np.array(self.space.encode(self.space.base))
        own = int(base[self.cat] * levels)
        self.opts = []
        for choice in range(levels):
            centre = _displaced(self.space, self.rng, self.distance)
            centre[self.cat] = (choice + 0.5) / levels
            self.opts.append(_snap(self.space, centre))
        bowl = self._bowl(base, own)
        others = [c for c in range(levels) if c != own]
        best = others[int(self.rng.integers(len(others)))]
        self.penalty = {c: float(self.rng.uniform(1.0, 2.0)) * bowl for c in others}
        self.penalty[best] = 0.0
        self.penalty[own] = float(self.rng.uniform(0.3, 0.6)) * bowl
        self.opt = self.opts[best]

    def _bowl(self, u: np.ndarray, choice: int) -> float:
        d = u - self.opts[choice]
        d[self.cat] = 0.0
        return float(d @ self.matrix @ d)

    def raw(self, u: np.ndarray) -> float:
        choice = min(len(self.opts) - 1, int(u[self.cat] * len(self.opts)))
        return self._bowl(u, choice) + self.penalty[choice]


@lru_cache(maxsize=1)
def optimizer_space() -> SearchSpace:
    """The shipped search space with the categorical ``optimizer`` gene switched on (the one edit the
    docs tell a user to make), from a copy of ``hyps/meta.yaml`` in a temporary file."""
    text = hyps.path(hyps.META).read_text()
    edited, n = re.subn(r"^(optimizer:\s*\{evolve:\s*)false", r"\1true", text, flags=re.M)
    if n != 1:
        raise RuntimeError(f"{hyps.path(hyps.META)}: no 'optimizer: {{evolve: false ...}}' line to switch on")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "meta.yaml"
        path.write_text(edited)
        return SearchSpace.load(path)


@lru_cache(maxsize=1)
def shipped_space() -> SearchSpace:
    """The shipped search space, loaded once for every family defined over it."""
    return SearchSpace.load()


def space_for(family: Any) -> SearchSpace:
    """The search space a family is defined over: the shipped one, or with the optimizer gene on."""
    return optimizer_space() if getattr(family, "evolve_optimizer", False) else shipped_space()


TUNING: dict[str, Callable[[SearchSpace, int], Any]] = {cls.name: cls for cls in (Far, Coupled)}

HELD_OUT: dict[str, Callable[[SearchSpace, int], Any]] = {
    "peaks (held out)": Peaks,
    **{cls.name: cls for cls in (Rastrigin, Bounds, Plateaus, Noisy, Sparse, Near, Separable, NoisyFar,
                                 Curved, OptimizerChoice)},
}
