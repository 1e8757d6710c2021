"""Image tasks (Kirsch et al., 2022, Alg. 1) with random class subsets and input sub-spaces.

Rows are drawn from the train split of an image dataset (MNIST, FashionMNIST: native
28 x 28 pixels, as a user would pass them), from ``k`` random classes in random
proportions. A chunk shares one view of the pixels:

* ``"full"``: all pixels (the input layout then projects them, the paper's augmentation);
* ``"subset"``: ``s`` random pixels, ``s`` log-uniform in ``[1, width]``;
* ``"lowrank"``: ``r`` random Gaussian combinations of the pixels, ``r`` in ``[1, width]``;

so narrow inputs of image origin are in the training distribution too.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from training.priors.common import MAX_CLASSES, RawTasks, class_counts, class_proportions, log_uniform_int, width_mask

VIEWS = ("full", "subset", "lowrank")


class ImageTasks:
    """Samples tasks from labelled images ``(x, y)`` (``(N, P)`` float, ``(N,)`` long, on the device)."""

    def __init__(self, datasets: list[tuple[Tensor, Tensor]]):
        self.datasets = []
        for x, y in datasets:
            order = y.argsort()
            counts = torch.bincount(y, minlength=MAX_CLASSES)
            starts = counts.cumsum(0) - counts
            self.datasets.append((x[order], counts, starts))

    def sample(self, b: int, length: int, width: int, g: torch.Generator, rng: np.random.Generator) -> RawTasks:
        dev = g.device
        x_all, counts, starts = self.datasets[rng.integers(len(self.datasets))]
        k = class_counts(b, g, dev)
        cum = class_proportions(k, g).cumsum(1)
        task_class = (torch.rand(b, length, 1, generator=g, device=dev) > cum[:, None, :-1]).sum(-1)  # 0..k-1
        chosen = torch.rand(b, MAX_CLASSES, generator=g, device=dev).argsort(1)  # task class -> dataset class
        label = chosen.gather(1, task_class)
        offset = (torch.rand(b, length, generator=g, device=dev) * counts[label]).long()
        x = x_all[starts[label] + offset]  # (b, L, P)
        pixels = x.shape[2]
        view = VIEWS[rng.choice(3, p=[0.5, 0.25, 0.25])]
        if view == "full":
            return RawTasks(x=x, y=task_class, feature_mask=torch.ones(b, pixels, dtype=torch.bool, device=dev))
        widths = log_uniform_int(b, 1, width, g, dev)
        if view == "subset":
            pick = torch.rand(b, pixels, generator=g, device=dev).argsort(1)[:, :width]
            x = x.gather(2, pick[:, None, :].expand(-1, length, -1))
        else:
            x = x @ torch.randn(b, pixels, width, generator=g, device=dev)
        return RawTasks(x=x, y=task_class, feature_mask=width_mask(widths, width))
