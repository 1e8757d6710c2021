"""The paper this project reproduces, and the numbers it is compared with.

Kirsch et al. (2022), *General-Purpose In-Context Learning by Meta-Learning Transformers*:
Table 2 is the accuracy (%) of the 100th prediction after 99 examples on unseen tasks of
each dataset's test split, for learners meta-trained on augmented MNIST.
"""

from __future__ import annotations

# Table 2's datasets (the datasets of training.data), in its column order.
DATASETS = ("mnist", "fashion_mnist", "kmnist", "random", "cifar10", "svhn")

# Display names of DATASETS.
DATASET_TITLES = {
    "mnist": "MNIST",
    "fashion_mnist": "FashionMNIST",
    "kmnist": "KMNIST",
    "random": "Random",
    "cifar10": "CIFAR10",
    "svhn": "SVHN",
}


def _row(*values: float) -> dict[str, float]:
    return dict(zip(DATASETS, values, strict=True))


# Table 2, by method (the paper has no outer-product LSTM row).
TABLE2 = {
    "SGD": _row(70.31, 50.78, 37.89, 100.0, 14.84, 10.16),
    "MAML": _row(53.71, 48.44, 36.33, 99.80, 17.38, 11.33),
    "VSML": _row(79.04, 68.49, 54.69, 100.0, 24.09, 17.45),
    "LSTM": _row(25.39, 28.12, 18.10, 58.72, 12.11, 11.07),
    "GPICL": _row(73.70, 62.24, 53.39, 100.0, 19.40, 14.58),
}
