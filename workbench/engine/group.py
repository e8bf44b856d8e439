"""A group: K configs of one study trained as one program, each model with its own random streams.

The protocol's first rule is that a model's result does not depend on its company: model k of a group equals
config k trained alone, every stored variable. So no draw may come from a generator the models share, or from one
seeded by the group's first config. Every model gets one stream per purpose, derived from its own seed(s):

    data      the split of a data set, the points or images drawn for training and held out
    noise     the noise a dial adds to the data: label flips, corrupted points, input noise
    init      the initial weights
    order     the order of minibatches and the per-step draws of training (diffusion's t and ε)
    sampling  the draws of sampling from a trained model
    rounding  stochastic rounding
    probe     measurements that draw (Lanczos start vectors, random projections)

The purposes a researcher holds fixed while redrawing others have their own dials (`data_seed`, `noise_seed`,
`init_seed`, `order_seed`; -1, the default, takes `seed`): e.g. the same split and init with twenty draws of the
label flips.
"""
from __future__ import annotations

import json

import numpy as np
import torch

from ..errors import ConfigError

PURPOSES = ("data", "noise", "init", "order", "sampling", "rounding", "probe")
#: the purposes with a seed dial of their own (the rest follow `seed`)
SEED_DIALS = {"data": "data_seed", "noise": "noise_seed", "init": "init_seed", "order": "order_seed"}


def derive(seed: int, purpose: str, *salt: int) -> int:
    """A 63-bit seed for one purpose (and optional integer salt, e.g. a measurement's index) from a user's seed.
    Distinct purposes give independent streams (numpy's SeedSequence hashing), so one draw more for one purpose
    never shifts another's."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown random purpose {purpose!r}: one of {', '.join(PURPOSES)}")
    entropy = [int(seed), PURPOSES.index(purpose), *map(int, salt)]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


class Streams:
    """One model's random streams: `generator(purpose)` is a torch.Generator that persists for the run (one draw
    after another), `fresh(purpose, *salt)` a new one each call (the same draws every time: e.g. the sampling
    noise of every measurement), `seed(purpose)` an integer for code that seeds its own generator."""

    def __init__(self, config):
        base = int(config.seed)
        self._seeds = {}
        for purpose in PURPOSES:
            own = getattr(config, SEED_DIALS.get(purpose, ""), -1)
            self._seeds[purpose] = derive(base if own is None or own < 0 else own, purpose)
        self._gens: dict[str, torch.Generator] = {}

    def seed(self, purpose: str, *salt: int) -> int:
        if purpose not in self._seeds:
            raise ValueError(f"unknown random purpose {purpose!r}: one of {', '.join(PURPOSES)}")
        return derive(self._seeds[purpose], purpose, *salt) if salt else self._seeds[purpose]

    def generator(self, purpose: str) -> torch.Generator:
        if purpose not in self._gens:
            self._gens[purpose] = torch.Generator().manual_seed(self.seed(purpose))
        return self._gens[purpose]

    def fresh(self, purpose: str, *salt: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed(purpose, *salt))


class Group:
    """K configs that differ only in their study's batchable (and sampling) dials, trained as one program on
    `device`; configs that differ only in sampling dials train one model between them (`training`, `leaders`).

    Refuses configs that differ in any other dial (naming it): a shared value must really be shared. Gives each
    model its streams, and per-model dials as (K,) tensors."""

    def __init__(self, configs: list, device="cpu"):
        if not configs:
            raise ConfigError("configs", "[]", "at least one config")
        self.configs, self.c0, self.k = list(configs), configs[0], len(configs)
        self.device = torch.device(device) if not isinstance(device, torch.device) else device
        shared = set(self.c0.dials()) - type(self.c0).batchable_dials()
        first = self.c0.config()
        for c in self.configs[1:]:
            if type(c) is not type(self.c0):
                raise ConfigError("configs", type(c).__name__, f"configs of one study ({type(self.c0).__name__})")
            cfg = c.config()
            for name in sorted(shared):
                if json.dumps(cfg[name], sort_keys=True) != json.dumps(first[name], sort_keys=True):
                    raise ConfigError(name, [first[name], cfg[name]],
                                      f"one value across a group (only {', '.join(sorted(type(c).batchable_dials()))}"
                                      " may differ between models trained together)")
        self.streams = [Streams(c) for c in self.configs]
        # configs that differ only in sampling dials train one model: training[m] is the index (into `leaders`) of
        # model m's training, leaders[j] the first model of training j (whose streams every model of it shares)
        keys = [c.training_key() for c in self.configs]
        self.leaders = [m for m, key in enumerate(keys) if key not in keys[:m]]
        self.training = [self.leaders.index(keys.index(key)) for key in keys]

    def __len__(self):
        return self.k

    def values(self, name: str) -> list:
        return [getattr(c, name) for c in self.configs]

    def per_model(self, name: str) -> torch.Tensor:
        """A numeric dial as a (K,) float32 tensor on the group's device."""
        return torch.tensor([float(v) for v in self.values(name)], dtype=torch.float32, device=self.device)

    def generators(self, purpose: str) -> list[torch.Generator]:
        return [s.generator(purpose) for s in self.streams]

    def shared(self, per_training: list) -> list:
        """Per-training objects (one per leader) as per-model ones: model m gets its training's."""
        return [per_training[j] for j in self.training]

    def seeds(self, purpose: str, *salt: int) -> list[int]:
        return [s.seed(purpose, *salt) for s in self.streams]
