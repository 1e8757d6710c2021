"""Task priors for meta-training a general-purpose in-context classifier.

Each family of tasks is a small module whose ``sample`` returns :class:`RawTasks`
(one or more chunks of sequences of raw rows, ``NaN`` = missing, labels ``0..k-1``):

==================  ===================================================================
module              tasks
==================  ===================================================================
:mod:`.mlp`         random MLPs as structural causal models: features and target read
                    off random nodes, the target cut into classes or taken as an argmax
:mod:`.trees`       random decision-tree ensembles labelling correlated, skewed features
:mod:`.clusters`    Gaussian-mixture clusters, one per class, with random covariances
:mod:`.images`      MNIST / FashionMNIST tasks (Kirsch et al., 2022, Alg. 1) with random
                    class subsets and random input sub-spaces
==================  ===================================================================

:mod:`.corruptions` adds what real tables have (heavy tails, outliers, discretised and
categorical-coded columns, irrelevant and duplicated features, missing values, label
noise); :mod:`.mixture` draws a batch from all families and passes every task through
the estimator's own input preprocessing (:mod:`gpicl_sklearn.inputs`).
"""
