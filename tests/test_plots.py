"""The training plot: title, legend and ticks, read back from the matplotlib figure."""
import re

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from sparkann import plots  # noqa: E402
from sparkann.optim import History  # noqa: E402

PLAIN = re.compile(r"^\d+(\.\d+)?$")  # 0.3, 2, 150: no 10^x, no mathtext


def history(n=12, validation=True):
    h = History()
    for i in range(n):
        loss = 0.9 * 0.9 ** i
        h.append(loss, loss * 1.1 if validation else np.nan,
                 0.7 + 0.01 * i if validation else np.nan)
    return h


def visible_ticks(axis, view):
    lo, hi = sorted(view)
    return [(t.get_loc(), t.label1.get_text()) for t in axis.get_major_ticks()
            if lo <= t.get_loc() <= hi]


@pytest.fixture
def figure():
    fig = plots.training_figure(history(), network="784-256-128-10 relu", solver="adam",
                                accuracy=0.8812, per="epoch")
    fig.canvas.draw()
    yield fig
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_title_names_network_solver_and_test_accuracy(figure):
    title = figure.axes[0].get_title()
    assert "784-256-128-10 relu" in title and "adam" in title
    assert "test accuracy 0.8812" in title and "12 epochs" in title


def test_every_line_has_a_legend_entry(figure):
    ax = figure.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["training loss", "validation loss", "validation accuracy"]
    drawn = [line.get_label() for a in figure.axes for line in a.get_lines()]
    assert sorted(drawn) == sorted(labels)


def test_legend_covers_no_line(figure):
    renderer = figure.canvas.get_renderer()
    legend = figure.axes[0].get_legend().get_window_extent(renderer)
    for ax in figure.axes:
        assert not legend.overlaps(ax.get_window_extent(renderer))


def test_epoch_ticks_are_integers(figure):
    ax = figure.axes[0]
    ticks = visible_ticks(ax.xaxis, ax.get_xlim())
    assert len(ticks) >= 3
    assert all(float(loc).is_integer() for loc, _ in ticks)
    assert all(re.fullmatch(r"\d+", text) for _, text in ticks)


def test_log_loss_axis_has_plain_labels(figure):
    ax = figure.axes[0]
    assert ax.get_yscale() == "log"
    ticks = visible_ticks(ax.yaxis, ax.get_ylim())
    assert len(ticks) >= 2, ticks
    assert all(PLAIN.match(text) for _, text in ticks), ticks
    # minor ticks carry no labels (matplotlib's default draws 3x10^-1 and the like there)
    assert not any(t.label1.get_text() for t in ax.yaxis.get_minor_ticks())


def test_without_validation_one_line_one_entry_and_iterations():
    fig = plots.training_figure(history(5, validation=False), network="4-3 sigmoid",
                                solver="lbfgs", per="iteration")
    try:
        ax = fig.axes[0]
        assert len(fig.axes) == 1
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["training loss"]
        assert ax.get_xlabel() == "iteration" and "5 iterations" in ax.get_title()
        assert "test accuracy" not in ax.get_title()
    finally:
        import matplotlib.pyplot as plt
        plt.close(fig)


@pytest.mark.parametrize("low, high, at_least", [(0.25, 0.9, 3), (0.02, 1.5, 4), (1e-4, 3, 4)])
def test_log_labels_fit_the_range(low, high, at_least):
    h = History()
    for loss in np.geomspace(high, low, 10):
        h.append(loss)
    fig = plots.training_figure(h, network="4-3 relu", solver="adam")
    try:
        fig.canvas.draw()
        ax = fig.axes[0]
        ticks = visible_ticks(ax.yaxis, ax.get_ylim())
        assert at_least <= len(ticks) <= 12, ticks
        assert all(PLAIN.match(text) for _, text in ticks), ticks
    finally:
        import matplotlib.pyplot as plt
        plt.close(fig)
