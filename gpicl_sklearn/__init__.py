"""gpicl-sklearn: a meta-learned general-purpose in-context classifier for scikit-learn.

>>> from gpicl_sklearn import GPICLClassifier
"""

from gpicl_sklearn.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from gpicl_sklearn.classifier import ContextSubsetWarning, GPICLClassifier, ManyClassesWarning
from gpicl_sklearn.table_encoding import TableEncoder

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "ContextSubsetWarning",
    "ManyClassesWarning",
    "TableEncoder",
    "GPICLClassifier",
    "load_checkpoint",
    "save_checkpoint",
]
