"""The training curve of ``sparkann train --plot`` (matplotlib, imported only here).

The title names the network, the solver and the final test accuracy; every line has a legend
entry, and the legend sits below the axes, where it covers no line. Epochs (or iterations)
get integer ticks, and the log-scale loss axis plain decimal labels (0.3, 0.5, 1), not powers
of ten, spaced for the range of the losses.
"""
import math

import numpy as np


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'sparkann[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plain_number(value, _position=None):
    """A tick label without powers of ten: 0.3, 2, 150, 0.0004."""
    return f"{value:.4g}" if value else "0"


def readable_log_axis(axis, values):
    """Log-scale ticks labelled as plain numbers, as many as the range of ``values`` allows:
    1, 2, 3, 5, 7 times powers of ten within one decade, 1, 2, 5 within two, else powers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values) & (values > 0)]
    decades = np.log10(values.max() / values.min()) if values.size else 3.0
    subs = (1.0, 2.0, 3.0, 5.0, 7.0) if decades <= 1 else (1.0, 2.0, 5.0) if decades <= 2 \
        else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(plain_number))
    axis.set_minor_formatter(NullFormatter())


def network_name(estimator):
    """``784-256-128-10 relu`` for a fitted estimator (its layer widths, hidden activation)."""
    widths = "-".join(str(n) for n in estimator.topology_.sizes)
    kind = estimator.activation if estimator.layers is None else "custom layers"
    return f"{widths} {kind}"


def training_figure(history, *, network, solver, accuracy=None, per="epoch",
                    metric=None, watched="validation", dropout=None):
    """The figure of a training run's loss curves (and validation metric, if recorded).

    Parameters
    ----------
    history : sparkann.optim.History
        ``loss``, ``val_loss``, ``val_metric`` and ``seconds`` per epoch or iteration.
    network, solver : str
        Named in the title (see :func:`network_name`).
    accuracy : float or None
        The final test accuracy (or score), named in the title.
    per : str
        What one step of the x axis is: ``"epoch"`` or ``"iteration"``.
    metric : str or None
        The legend label of the validation metric line (default: "<watched> accuracy").
    watched : str
        What the rows of ``val_loss`` and ``val_metric`` are: ``"validation"``, ``"test"``.
    dropout : float, list of float or None
        The dropout rates, named in the title when non-zero.

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    steps = np.arange(1, len(history) + 1)
    fig, ax = plt.subplots(figsize=(7, 4.6))
    lines = ax.plot(steps, history.loss, label="training loss", color="tab:blue", marker=".")
    if not np.all(np.isnan(history.val_loss)):
        lines += ax.plot(steps, history.val_loss, label=f"{watched} loss", color="tab:orange",
                         marker=".")
    ax.set_xlabel(per)
    ax.set_ylabel("loss (log scale)")
    ax.set_yscale("log")
    readable_log_axis(ax.yaxis, np.concatenate([history.loss, history.val_loss]))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="major", alpha=0.3)
    if not np.all(np.isnan(history.val_metric)):
        twin = ax.twinx()
        metric = metric or f"{watched} accuracy"
        lines += twin.plot(steps, history.val_metric, label=metric, color="tab:green",
                           marker=".", linestyle="--")
        twin.set_ylabel(metric)
    ax.legend(lines, [line.get_label() for line in lines], loc="upper center",
              bbox_to_anchor=(0.5, -0.16), ncol=len(lines), frameon=False)
    title = f"{network}, {solver}"
    if np.any(dropout):
        title += f", dropout {dropout}"
    if accuracy is not None:
        title += f": test accuracy {accuracy:.4f}"
    if len(history):
        count = f"{len(history)} {per}{'s' if len(history) != 1 else ''}"
        seconds = history.seconds[-1]
        title += f"\n{count} in {seconds:.1f} s" if math.isfinite(seconds) else f"\n{count}"
    ax.set_title(title)
    fig.tight_layout()
    return fig


def save_training_plot(path, history, **kwargs):
    """Draw :func:`training_figure` to an image file (the format from the file's suffix)."""
    plt = _pyplot()
    fig = training_figure(history, **kwargs)
    try:
        fig.savefig(path, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
