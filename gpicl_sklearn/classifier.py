"""A scikit-learn classifier that learns in context with a meta-trained GPICL Transformer."""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import (
    check_array,
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from gpicl_sklearn.checkpoint import BUNDLED, Checkpoint, load_checkpoint
from gpicl_sklearn.inputs import InputStats, fit_input_stats, standardize
from gpicl_sklearn.layouts import LayoutApplier, draw_member_layouts
from gpicl_sklearn.model import ContextCache, GPICLTransformer
from gpicl_sklearn.normal_scores import NormalScores
from gpicl_sklearn.preprocessing import context_rows, draw_output_code, encode_labels, members_for_classes
from gpicl_sklearn.table_encoding import TableEncoder, draw_code_permutations, is_dataframe, permute_codes


class ContextSubsetWarning(UserWarning):
    """The training set is larger than the model's context: each member reads a subset."""


class ManyClassesWarning(UserWarning):
    """More classes than label slots need more ensemble members than ``n_estimators`` asks for."""


class GPICLClassifier(ClassifierMixin, BaseEstimator):
    r"""Classifier that learns in context with a meta-trained GPICL Transformer.

    ``fit`` runs no gradient descent. It stores the training rows as the *context* of a
    Transformer that was meta-trained (Kirsch et al., 2022, "General-Purpose In-Context
    Learning by Meta-Learning Transformers") to classify a query from a sequence of
    labelled examples of a task it has never seen; ``predict_proba`` then classifies all
    queries against that context in one forward pass.

    **Tokens.** The model reads a sequence of tokens
    :math:`t_i = [\tilde x_i;\ \mathrm{onehot}(y_{i-1})]` (no label in :math:`t_1`),
    :math:`\tilde x_i \in \mathbb{R}^{N_x}`, and its output at position :math:`i` is a
    distribution over :math:`C` label slots for :math:`y_i`. The context is
    :math:`n \le L - 1` training rows (:math:`L` = ``max_len`` of the checkpoint; the
    default checkpoint has :math:`N_x = 128`, :math:`C = 10`, :math:`L - 1 = 1023`). A
    query :math:`x_q` is the token :math:`[\tilde x_q;\ \mathrm{onehot}(y_n)]` at position
    :math:`n + 1`; it attends to the context and to itself only, so queries do not
    influence each other and the context is encoded once, in ``fit``.

    **Tables.** A DataFrame goes through :class:`~gpicl_sklearn.TableEncoder` (fitted in
    ``fit``): numbers stay, booleans become 0/1, categories become integer codes, missing
    values and unseen categories become ``NaN``. Member :math:`e` reads the codes of
    categorical column :math:`j` through its own random permutation :math:`\sigma_{ej}`,
    as the meta-training prior presents categories.

    **Inputs.** Each member standardises with the statistics of its own context rows
    (:mod:`gpicl_sklearn.inputs`, the preprocessing of meta-training): prescale by
    :math:`\max |x|`, z-score, clip at :math:`\pm 3`, ``NaN`` :math:`\to 0` plus a missing
    indicator, constant columns dropped, unit root-mean-square; giving :math:`z \in
    \mathbb{R}^{2d}`. The layout :math:`P_e \in \mathbb{R}^{2d \times N_x}` places
    :math:`z` into the model's input slots, :math:`\tilde x = P_e^\top z`: a random injection
    of the present columns into the slots (``"slots"`` checkpoints, at most :math:`N_x`
    present columns; stored as integer indices, applied as a scatter), else a Gaussian
    projection :math:`(P_e)_{jk} \sim \mathcal N(0, 1/d_{present})` stored as a seed and
    regenerated (:mod:`gpicl_sklearn.layouts`): no :math:`d \times N_x` float matrix is
    pickled.

    **Label slots.** :math:`K \le C` classes are mapped onto distinct slots by a random
    injection :math:`\pi_e` (meta-training permuted labels, so no slot is special). With
    logits :math:`\ell(x)`, the member's probabilities are the softmax over the used slots,
    mapped back to classes:
    :math:`p_e(c \mid x) = e^{\ell_{\pi_e(c)}(x)} / \sum_{c'} e^{\ell_{\pi_e(c')}(x)}`, and
    :math:`\hat p(c \mid x) = \sum_e w_e\, p_e(c \mid x)`.

    **Two views, weighted by evidence.** With ``normal_scores=True`` (the default) a second set of
    ``n_estimators`` members reads the numeric columns as normal scores
    (:class:`~gpicl_sklearn.normal_scores.NormalScores`, fitted on the training rows). The
    model predicts every context row from the rows before it, so encoding the context also
    gives each member's prequential log-loss of the training labels,
    :math:`L_e = -\sum_{i=1}^{n} \log p_e(y_i \mid x_{1..i}, y_{1..i-1})` (:math:`-\log` of
    the likelihood of the context under member :math:`e`, a marginal likelihood), at no
    extra cost. The members are weighted by a tempered posterior,
    :math:`w_e \propto \exp(-\beta L_e)` (:math:`\beta` = ``evidence_power``; members
    share most of their evidence, so the full posterior, :math:`\beta = 1`, would trust
    one member), and so each table is read mostly through the view that predicts it
    better.

    **More classes than slots** (:math:`K > C`): an output code. Member :math:`e` splits
    the classes into :math:`C` balanced groups, one per slot (:math:`\pi_e` is then many
    to one), and learns the :math:`C`-class task of the groups; the members together give
    every class its own code word (:func:`~gpicl_sklearn.preprocessing.draw_output_code`).
    A class gets :math:`\log p_e(c \mid x) = \log \mathrm{softmax}(\ell)_{\pi_e(c)} -
    \log |\pi_e^{-1}(\pi_e(c))|` and :math:`\hat p(c \mid x) \propto \exp \frac1E \sum_e
    \log p_e(c \mid x)`, with equal weights: members of different class groupings
    learn different tasks, whose evidence does not compare. A member's slot probability is
    shared by up to :math:`\lceil K/C \rceil` classes, so the ensemble has
    ``n_estimators`` :math:`\times \lceil K/C \rceil` members, at least :math:`\lceil 2 \ln K / \ln C \rceil` (more: a
    :class:`ManyClassesWarning`); ``n_members_`` says how many. Measured with 1,000 training
    rows (``python -m benchmarks.many_classes``): 50 and 100 synthetic classes, accuracy 0.49
    and 0.25 with 8 members, 0.64 and 0.46 with 40 and 80.

    **More rows than the context holds** (:math:`n > L - 1`): the rows are shuffled
    once and member :math:`e` reads the :math:`L - 1` consecutive rows starting at
    :math:`e (L - 1)`, wrapping around, so the members together read every row when
    ``n_members_ * (L - 1) >= n_samples``. ``fit`` issues a :class:`ContextSubsetWarning`
    saying how many rows were used, and advises more members only up to
    :data:`MAX_ADVISED_MEMBERS` (fit and predict cost grow linearly with the members).

    Parameters
    ----------
    checkpoint : str or path-like, default="default"
        Meta-trained weights: ``"default"`` (bundled with the package), a local checkpoint
        folder or ``model.safetensors`` file, or a Hugging Face Hub id ``"owner/name"``;
        see :func:`gpicl_sklearn.load_checkpoint`. Loaded in ``fit``.
    n_estimators : int, default=8
        Ensemble members per input view (projections, label assignments and context
        orders). With more classes :math:`K` than the checkpoint's :math:`C` label slots,
        each slot holds up to :math:`\lceil K/C \rceil` classes and each view has
        ``n_estimators`` times that many members (``n_members_`` in all).
    normal_scores : bool, default=True
        Also run members on the numeric columns as normal scores (see *Two views*). Fit and
        predict cost about twice as much as with ``False``.
    evidence_power : float, default=0.1
        :math:`\beta \ge 0` of the member weights :math:`w_e \propto \exp(-\beta L_e)`;
        0 weights every member equally.
    device : {"auto", "cpu", "cuda"} or torch.device, default="auto"
        Where the Transformer runs; ``"auto"`` picks CUDA when available.
    batch_size : int, default=64
        Queries per forward pass; bounds memory (about ``n_estimators * batch_size *
        4 * d_model`` floats). Every pass has exactly this many rows (the last one padded),
        so a row's prediction does not depend on which rows are predicted alongside it; a
        call costs at least one pass, so keep it small on CPU (a GPU wants thousands).
    random_state : int, RandomState instance or None, default=None
        Seeds every random draw of ``fit``; an int makes ``fit`` reproducible.
    n_threads : int or None, default=1
        Torch threads during ``fit`` and ``predict`` (restored afterwards). One thread
        never oversubscribes cores shared with other processes (cross-validation with
        ``n_jobs``); measured on a loaded 2-core machine, two threads made ``predict`` 17x
        slower. ``None``: torch's current setting, which follows
        ``threadpoolctl.threadpool_limits`` and joblib's limits for its workers.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, sorted.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names seen in ``fit``, when ``X`` had string column names.
    table_encoder_ : TableEncoder or None
        The encoding of a DataFrame's columns (``None`` for arrays).
    n_members_ : int
        Ensemble members used: ``n_estimators`` per view (two views with
        ``normal_scores``), times :math:`\lceil K/C \rceil` with more classes than label
        slots.
    member_weights_ : ndarray of shape (n_members_,)
        The weights :math:`w_e` of the members' probabilities (they sum to one).
    checkpoint_path_ : str
        ``checkpoint`` with a relative local path made absolute (pickles load anywhere).

    Notes
    -----
    The Transformer runs in float32. Matrix-product kernels round differently for
    different shapes, so every forward pass has exactly ``batch_size`` query rows (the
    last chunk padded with zeros, which cost time but change nothing: queries do not
    attend to each other). A row's probabilities are then the same whichever rows share
    its ``predict_proba`` call; changing ``batch_size`` itself changes them by rounding
    only (~1e-7).

    Non-finite model outputs (which finite, clipped inputs should never cause) raise a
    ``ValueError`` rather than returning ``NaN`` probabilities; columns of any finite
    magnitude (``1e300``, ``1e-300``) are prescaled by their largest value first.

    A fitted estimator pickles without the model weights (it keeps only its own fitted
    arrays and re-reads ``checkpoint`` on first use), so it is small and, fitted on a
    GPU with ``device="auto"``, predicts on a CPU-only machine. It refuses to predict if
    the checkpoint's weights have changed since ``fit``.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from gpicl_sklearn import GPICLClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = GPICLClassifier(random_state=0).fit(X, y)  # doctest: +SKIP
    >>> clf.predict_proba(X[:2]).shape  # doctest: +SKIP
    (2, 3)
    """

    def __init__(
        self,
        checkpoint="default",
        n_estimators=8,
        normal_scores=True,
        evidence_power=0.1,
        device="auto",
        batch_size=64,
        random_state=None,
        n_threads=1,
    ):
        self.checkpoint = checkpoint
        self.n_estimators = n_estimators
        self.normal_scores = normal_scores
        self.evidence_power = evidence_power
        self.device = device
        self.batch_size = batch_size
        self.random_state = random_state
        self.n_threads = n_threads

    def fit(self, X, y) -> GPICLClassifier:
        """Encode the training rows as the context of every ensemble member.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Dense numbers, ``NaN`` for missing values; a DataFrame may also hold
            categorical, string, boolean and nullable columns (see
            :class:`~gpicl_sklearn.table_encoding.TableEncoder`).
        y : array-like of shape (n_samples,)
            Class labels of any type, any number of classes.

        Returns
        -------
        self
        """
        _resolve_device(self.device)  # a bad device fails here, before any work
        _check_positive_int(self.n_estimators, "n_estimators")
        _check_positive_int(self.batch_size, "batch_size")
        if self.n_threads is not None:
            _check_positive_int(self.n_threads, "n_threads")
        if not isinstance(self.normal_scores, (bool, np.bool_)):
            raise ValueError(f"normal_scores must be True or False, got {self.normal_scores!r}")
        if not (
            isinstance(self.evidence_power, numbers.Real)
            and math.isfinite(self.evidence_power)
            and self.evidence_power >= 0
        ):
            raise ValueError(f"evidence_power must be a finite number >= 0, got {self.evidence_power!r}")
        X, y = self._validate_table(X, y, reset=True)
        with _threads(self.n_threads):
            return self._fit(X, y)

    def _fit(self, X: np.ndarray, y) -> GPICLClassifier:
        classes, y = encode_labels(y)
        source = _absolute_source(self.checkpoint)
        checkpoint = load_checkpoint(source, shared=True)  # read-only: see _inference_model
        cfg = checkpoint.model.cfg
        rng = np.random.default_rng(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

        sharing = math.ceil(len(classes) / cfg.num_classes)  # classes per label slot (1 when K <= C)
        wanted = self.n_estimators * sharing
        needed = members_for_classes(len(classes), cfg.num_classes)
        if wanted < needed:
            warnings.warn(
                f"{len(classes)} classes need an output code over at least {needed} ensemble members "
                f"(the checkpoint has {cfg.num_classes} label slots); using {needed} instead of "
                f"n_estimators x {sharing} = {wanted}",
                ManyClassesWarning,
                stacklevel=3,
            )
        encoder = self.table_encoder_
        self._normal_scores = (
            NormalScores(skip=encoder.categorical_columns if encoder else ()).fit(X) if self.normal_scores else None
        )
        n_views = 2 if self.normal_scores else 1
        slots, n_members = draw_output_code(rng, len(classes), cfg.num_classes, n_views * max(wanted, needed))
        self._member_view = np.arange(n_members) * n_views // n_members  # (n_members,): 0 as it is, 1 normal scores

        n_samples = X.shape[0]
        max_context = cfg.max_len - 1
        rows = context_rows(rng, n_samples, n_members, max_context)
        if n_samples > max_context:
            message = _subset_message(n_samples, n_members, max_context, sharing * n_views)
            warnings.warn(message, ContextSubsetWarning, stacklevel=3)
        self._code_permutations = draw_code_permutations(rng, encoder.categories_ if encoder else {}, n_members)
        member_rows = self._views(X)[self._member_view[:, None], rows]  # (n_members, n, d) in each member's view

        # Per-member statistics of its own context rows, in member groups that bound memory.
        stats = []
        for members in _member_groups(n_members, rows.shape[1] * X.shape[1]):
            context = permute_codes(member_rows[members], _select(self._code_permutations, members))
            stats.append(fit_input_stats(torch.from_numpy(np.ascontiguousarray(context))))
        stats = InputStats(**{k: torch.cat([getattr(s, k) for s in stats]) for k in vars(stats[0])})
        self._stats = {k: v.numpy() for k, v in vars(stats).items()}
        self._layouts = draw_member_layouts(self._stats["present"], cfg.input_dim, checkpoint.layout, rng)

        group_size = np.stack([np.bincount(s, minlength=cfg.num_classes)[s] for s in slots])
        self.classes_ = classes
        self.n_members_ = n_members
        self.checkpoint_path_ = source
        self._label_slots = slots  # (n_members, n_classes): slot of each class
        self._log_group_size = np.log(group_size)  # (n_members, n_classes): classes sharing that slot
        self._context_y = np.take_along_axis(slots, y[rows], axis=1)  # slot labels, same order as rows
        self._checkpoint_sha256 = checkpoint.sha256
        self._encoded = _Lazy()
        # The context is stored before the layout when that is smaller (narrow tables), else after.
        laid_out = 2 * X.shape[1] > cfg.input_dim
        applier = LayoutApplier(self._layouts, torch.device("cpu")) if laid_out else None
        self._context_inputs = self._model_inputs(member_rows, stats, applier, device=torch.device("cpu")).numpy()
        self._context_laid_out = laid_out
        if not np.isfinite(self._context_inputs).all():  # cannot happen for finite input; guard the model
            raise ValueError("the preprocessed training rows are not finite; please report this input")
        self._evidence_power = self.evidence_power  # set_params after fit changes nothing until the next fit
        self.member_weights_ = self._encoded_context(checkpoint).weights.cpu().numpy()
        return self

    def _views(self, X: np.ndarray) -> np.ndarray:
        """``(views, rows, d)``: ``X`` as it is, then (``normal_scores``) as normal scores."""
        if self._normal_scores is None:
            return X[None]
        return np.stack([X, self._normal_scores.transform(X)])

    def _evidence_weights(self, enc: _EncodedContext, y: torch.Tensor) -> torch.Tensor:
        """Member weights :math:`w_e \\propto \\exp(-\\beta L_e)` from the context rows' own logits."""
        n_members = len(self._label_slots)
        if len(self.classes_) > enc.model.cfg.num_classes:  # output code: evidence of different tasks
            return torch.full((n_members,), 1 / n_members, dtype=torch.float64, device=enc.device)
        logp = enc.cache.logits.double().masked_fill(~enc.used_slots[:, None, :], -torch.inf).log_softmax(-1)
        log_loss = -logp.gather(2, y[..., None]).sum((1, 2))  # (n_members,): L_e
        return (-self._evidence_power * log_loss).softmax(0)

    def _validate_table(self, X, y="no_validation", reset: bool = False):
        """``X`` as a float64 matrix (``NaN`` = missing), DataFrames through the fitted encoder."""
        if reset:
            self.table_encoder_ = TableEncoder().fit(X) if is_dataframe(X) else None
        encoder = getattr(self, "table_encoder_", None)
        kwargs = dict(dtype=np.float64, ensure_all_finite="allow-nan")
        if encoder is None or not is_dataframe(X):
            if encoder is not None and encoder.categorical_columns:
                raise ValueError(
                    "this estimator was fitted on a DataFrame with categorical columns; pass a "
                    "DataFrame with the same columns to predict"
                )
            return validate_data(self, X, y, reset=reset, **kwargs)
        validate_data(self, X, reset=reset, skip_check_array=True)  # feature names and count
        if X.shape[1] != encoder.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{encoder.n_features_in_} features as input"
            )
        X = check_array(encoder.transform(X), **kwargs)
        if isinstance(y, str) and y == "no_validation":
            return X
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        check_consistent_length(X, y)
        return X, column_or_1d(y, warn=True)

    def _model_inputs(self, X: np.ndarray, stats: InputStats, applier, device: torch.device) -> torch.Tensor:
        """The members' model inputs ``(E, rows, width)`` float32 for raw rows ``X``.

        ``X``: ``(rows, d)`` (the same rows for every member, put into each member's view
        here) or ``(E, rows, d)`` (each member's rows, already in its view). Members are
        processed in groups that keep the float64 intermediates under :data:`_GROUP_FLOATS`.
        """
        n_members = len(self._label_slots)
        views = self._views(X) if X.ndim == 2 else None
        out = []
        for members in _member_groups(n_members, X.shape[-2] * X.shape[-1]):
            perms = _select(self._code_permutations, members)
            member_view = self._member_view[members]
            if X.ndim == 3 or perms or member_view[0] != member_view[-1]:
                raw = X[members] if X.ndim == 3 else views[member_view]
                raw = torch.as_tensor(np.ascontiguousarray(permute_codes(raw, perms)), device=device)
            else:  # the same rows for every member of the group: a view, no copy
                raw = torch.as_tensor(views[member_view[0]], device=device).expand(len(member_view), -1, -1)
            group = InputStats(**{k: getattr(stats, k)[members] for k in vars(stats)})
            z = standardize(raw, group).float()
            out.append(applier(z, members) if applier is not None else z)
        return out[0] if len(out) == 1 else torch.cat(out)

    def predict_proba(self, X) -> np.ndarray:
        r"""Class probabilities over the ensemble members.

        With :math:`C` label slots and :math:`K` classes, member :math:`e` gives class
        :math:`c` the log-probability
        :math:`\log p_e(c \mid x) = \log \mathrm{softmax}(\ell_e(x))_{s_e(c)} - \log |g_e(c)|`
        (its slot's probability shared among the :math:`|g_e(c)|` classes on that slot;
        the softmax runs over the used slots). :math:`K \le C`: every group is one class
        and :math:`\hat p(c \mid x) = \frac1E \sum_e p_e(c \mid x)`. :math:`K > C` (an
        output code): :math:`\hat p(c \mid x) \propto \exp \frac1E \sum_e \log p_e(c \mid x)`,
        the normalised geometric mean, so a class must be likely under every member.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``; rows sum to one.
        """
        check_is_fitted(self)
        X = self._validate_table(X)
        with _threads(self.n_threads):
            enc = self._encoded_context()
            proba = np.empty((X.shape[0], len(self.classes_)))
            for start in range(0, X.shape[0], self.batch_size):
                proba[start : start + self.batch_size] = self._predict_pass(enc, X[start : start + self.batch_size])
        return proba

    def _predict_pass(self, enc: _EncodedContext, raw: np.ndarray) -> np.ndarray:
        n = len(raw)
        if n < self.batch_size:  # every pass has batch_size rows: see Notes
            raw = np.concatenate([raw, np.zeros((self.batch_size - n, raw.shape[1]))])
        inputs = self._model_inputs(raw, enc.stats, enc.applier, enc.device)
        logits = enc.model.predict_logits(enc.cache, enc.model.embed_x(inputs))[:, :n]  # (E, Q, C)
        if not torch.isfinite(logits).all():
            raise ValueError(
                "the model produced non-finite outputs; the inputs were finite after preprocessing, "
                "so please report this input"
            )
        logp = logits.double().masked_fill(~enc.used_slots[:, None, :], -torch.inf).log_softmax(-1)
        logp = logp.gather(2, enc.label_slots[:, None, :].expand(-1, n, -1)) - enc.log_group_size[:, None, :]
        w = enc.weights[:, None, None]
        if len(self.classes_) <= enc.model.cfg.num_classes:
            return (w * logp.exp()).sum(0).cpu().numpy()
        return (w * logp).sum(0).softmax(-1).cpu().numpy()

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row (``argmax`` of :meth:`predict_proba`)."""
        proba = self.predict_proba(X)  # first: it raises NotFittedError before fit
        return self.classes_[np.argmax(proba, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # a missing value gets an indicator column (gpicl_sklearn.inputs)
        tags.input_tags.categorical = True  # DataFrame columns: see TableEncoder
        tags.input_tags.string = True
        return tags

    def __getstate__(self) -> dict:
        # Drop the torch state (model reference, device tensors): pickles stay small, hold
        # no weights, and load on machines without the fitting device.
        state = dict(super().__getstate__())
        if "_encoded" in state:
            state["_encoded"] = _Lazy()
        return state

    def _encoded_context(self, checkpoint: Checkpoint | None = None) -> _EncodedContext:
        """The torch state for the current ``device``, built from the fitted arrays once."""
        device = _resolve_device(self.device)
        enc = self._encoded.value
        if enc is not None and enc.device == device:
            return enc
        checkpoint = checkpoint or load_checkpoint(self.checkpoint_path_, shared=True)
        if checkpoint.sha256 != self._checkpoint_sha256:
            raise ValueError(
                f"checkpoint {str(self.checkpoint)!r} holds different weights than when this "
                "estimator was fitted; fit it again"
            )
        model = _inference_model(checkpoint, device)
        slots = torch.tensor(self._label_slots, device=device)
        used = torch.zeros(len(slots), model.cfg.num_classes, dtype=torch.bool, device=device)
        enc = _EncodedContext(
            device=device,
            model=model,
            stats=InputStats(**{k: torch.tensor(v, device=device) for k, v in self._stats.items()}),
            applier=LayoutApplier(self._layouts, device),
            label_slots=slots,
            used_slots=used.scatter_(1, slots, True),
            log_group_size=torch.tensor(self._log_group_size, device=device),
        )
        context = torch.tensor(self._context_inputs, device=device)  # copies: arrays may be read-only memory maps
        if not self._context_laid_out:
            context = enc.applier(context, slice(0, len(context)))
        y = torch.tensor(self._context_y, device=device)
        enc.cache = model.encode_context(model.embed_x(context), y)
        enc.weights = self._evidence_weights(enc, y)
        self._encoded.value = enc
        return enc


@dataclass
class _EncodedContext:
    device: torch.device
    model: GPICLTransformer
    stats: InputStats  # per member, on device
    applier: LayoutApplier
    label_slots: torch.Tensor  # (E, n_classes): slot of each class
    used_slots: torch.Tensor  # (E, C) bool
    log_group_size: torch.Tensor  # (E, n_classes)
    cache: ContextCache | None = None
    weights: torch.Tensor | None = None  # (E,) float64 member weights w_e, from the cache


class _Lazy:
    """A slot whose contents may change while the estimator's ``__dict__`` does not."""

    def __init__(self):
        self.value: _EncodedContext | None = None


# The last model moved to an accelerator, shared by every estimator using the same weights
# and device: repeated fits (cross-validation, grid search) neither copy nor move the
# weights again. Never mutated once stored.
_DEVICE_MODEL: dict[tuple, GPICLTransformer] = {}


def _inference_model(checkpoint: Checkpoint, device: torch.device) -> GPICLTransformer:
    """The checkpoint's shared, read-only model on ``device`` (inference runs under no_grad)."""
    if device.type == "cpu":
        return checkpoint.model
    key = (checkpoint.sha256, device)
    if key not in _DEVICE_MODEL:
        _DEVICE_MODEL.clear()
        _DEVICE_MODEL[key] = copy.deepcopy(checkpoint.model).to(device)  # .to would move the shared model
    return _DEVICE_MODEL[key]


def _resolve_device(device) -> torch.device:
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:<index>' or a torch.device, got {device!r}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was requested, but CUDA is not available here; use 'cpu' or 'auto'")
        if (resolved.index or 0) >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) are available")
    return resolved


def _check_positive_int(value, name: str) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


# Members worth adding to read more rows: each costs one context encoding in fit and one
# forward pass per query in predict, so predict time grows linearly with n_members.
MAX_ADVISED_MEMBERS = 32
_GROUP_FLOATS = 2**23  # float64 elements of raw rows per member group: 64 MiB


def _subset_message(n_samples: int, n_members: int, max_context: int, sharing: int = 1) -> str:
    """The ContextSubsetWarning; ``sharing``: members per ``n_estimators`` (views x classes per label slot)."""
    used = min(n_samples, n_members * max_context)
    message = (
        f"{n_samples} training rows exceed the model's context of {max_context} rows: the rows "
        f"are shuffled once and each of the {n_members} ensemble members reads the next "
        f"{max_context} of them (wrapping around), so {used} distinct rows are used"
    )
    if used < n_samples:
        needed = math.ceil(n_samples / max_context)
        if needed <= MAX_ADVISED_MEMBERS:
            message += (
                f"; set n_estimators >= {math.ceil(needed / sharing)} to use every row (fit and predict time grow "
                f"linearly with n_estimators: {needed / n_members:.1f}x the current cost)"
            )
        else:
            message += (
                f"; reading every row would take {needed} members ({needed / n_members:.0f}x the "
                f"current predict time), beyond the advised budget of n_estimators <= "
                f"{MAX_ADVISED_MEMBERS} ({MAX_ADVISED_MEMBERS * max_context} rows); for more "
                "rows, fit a classical learner or a GPICLClassifier per stratum"
            )
    return message + "."


def _member_groups(n_members: int, floats_per_member: int) -> list[slice]:
    """Consecutive member slices whose raw rows hold at most :data:`_GROUP_FLOATS` float64 each."""
    size = max(1, min(n_members, _GROUP_FLOATS // max(floats_per_member, 1)))
    return [slice(start, min(start + size, n_members)) for start in range(0, n_members, size)]


def _select(permutations: dict, members: slice) -> dict:
    return {j: p[members] for j, p in permutations.items()}


def _absolute_source(checkpoint):
    """A relative local checkpoint path made absolute, so a pickle loads from any directory."""
    if isinstance(checkpoint, (str, os.PathLike)) and str(checkpoint) not in BUNDLED and os.path.exists(checkpoint):
        return os.path.abspath(checkpoint)
    return checkpoint


@contextlib.contextmanager
def _threads(n_threads):
    """Run torch with ``n_threads`` threads (``None``: as many as it has now, which already
    follows ``threadpoolctl.threadpool_limits`` and joblib's limits for its workers)."""
    if n_threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
