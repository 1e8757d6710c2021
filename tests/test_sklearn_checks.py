"""scikit-learn's own estimator checks, all of them, with no expected failures.

They run on the bundled default checkpoint: check_classifiers_train demands a training
accuracy above 0.83 on three Gaussian blobs, which only a model that has learned to learn
in context reaches.
"""

from __future__ import annotations

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from gpicl_sklearn import GPICLClassifier


# Some checks fit more rows than the context holds; the warning is the documented behaviour.
@pytest.mark.filterwarnings("ignore::gpicl_sklearn.ContextSubsetWarning")
@parametrize_with_checks([GPICLClassifier(random_state=0)])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
