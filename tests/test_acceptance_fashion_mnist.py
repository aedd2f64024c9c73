"""Fashion-MNIST accuracy targets. The full runs are marked slow (minutes on 2 cores)."""
import os

import pytest

from sparkann.datasets import DEBIAN_FASHION_MNIST, load_fashion_mnist
from sparkann.estimator import MLPClassifier

pytestmark = pytest.mark.skipif(not os.path.isdir(DEBIAN_FASHION_MNIST),
                                reason="needs Debian's dataset-fashion-mnist")


@pytest.fixture(scope="module")
def fashion():
    return load_fashion_mnist(kind="train"), load_fashion_mnist(kind="test")


def adam_recipe(max_iter):
    return MLPClassifier((256, 128), activation="relu", solver="adam", learning_rate=0.002,
                         lr_schedule="cosine", batch_size=128, max_iter=max_iter, seed=0)


def spark_recipe(max_iter):
    # Spark MLlib's defaults: sigmoid hidden layers, L-BFGS, block size 128, its initialisation
    return MLPClassifier((256, 128), activation="sigmoid", solver="lbfgs", max_iter=max_iter,
                         block_size=128, init="spark", seed=0)


def test_adam_short_run(fashion):
    (X, y), (Xt, yt) = fashion
    clf = adam_recipe(3).fit(X[:10000], y[:10000])
    assert clf.score(Xt[:2000], yt[:2000]) >= 0.80


def test_lbfgs_short_run(fashion):
    (X, y), (Xt, yt) = fashion
    clf = spark_recipe(30).fit(X[:5000], y[:5000])
    assert clf.score(Xt[:2000], yt[:2000]) >= 0.75


@pytest.mark.slow
def test_adam_relu_reaches_88_5_percent_in_20_epochs(fashion):
    (X, y), (Xt, yt) = fashion
    clf = adam_recipe(20).fit(X, y)
    assert clf.n_iter_ <= 20
    assert clf.score(Xt, yt) >= 0.885


@pytest.mark.slow
def test_spark_default_recipe_reaches_85_percent(fashion):
    (X, y), (Xt, yt) = fashion
    clf = spark_recipe(100).fit(X, y)
    assert clf.score(Xt, yt) >= 0.85
