"""gpicl-sklearn: a meta-learned general-purpose in-context classifier for scikit-learn.

>>> from gpicl_sklearn import GPICLClassifier
"""

from gpicl_sklearn.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from gpicl_sklearn.classifier import ContextSubsetWarning, GPICLClassifier

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "ContextSubsetWarning",
    "GPICLClassifier",
    "load_checkpoint",
    "save_checkpoint",
]
