"""Callbacks for the Spark estimators: training progress (each round's time and the total)
and scores on held-out rows.

``MultilayerPerceptronClassifier.setCallback(TrainingProgress(maxIter))`` prints one line per
iteration (a round of local steps and averaging for adam and sgd)::

    round  3/15: loss 0.5213 | this round 2.1 s | total 16.8 s

When the stream is a terminal the lines are written above a tqdm bar (rounds done, the rate
and the time left). The first round's time includes stacking and caching the data, which
``fit`` does before the first round.
"""
import sys
import time


class TrainingProgress:
    """A ``callback(iteration, weights, loss)`` that reports times per iteration and in total.

    Parameters
    ----------
    total : int
        Iterations expected (``maxIter``): the bar's length and the ``/total`` of each line.
    unit : str
        What one iteration is called: ``"round"`` (adam, sgd) or ``"iteration"``.
    stream : file or None
        Where to write (default: ``sys.stdout`` at the time of the call).
    bar : bool or None
        Draw a tqdm bar; None: when ``stream`` is a terminal.

    The clock starts when the object is made: make it right before ``fit``.
    """

    def __init__(self, total, unit="round", stream=None, bar=None):
        self.total = int(total)
        self.unit = unit
        self.stream = sys.stdout if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.use_bar = bool(isatty and isatty()) if bar is None else bool(bar)
        self.start = self.last = time.perf_counter()
        self.round_seconds = []
        self._bar = None
        if self.use_bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, unit=unit, file=self.stream, leave=True,
                             desc="training")

    @property
    def seconds(self):
        """Seconds since the clock started."""
        return time.perf_counter() - self.start

    def __call__(self, iteration, weights, loss):
        now = time.perf_counter()
        this, self.last = now - self.last, now
        self.round_seconds.append(this)
        width = len(str(self.total))
        line = (f"{self.unit} {iteration:{width}d}/{self.total}: loss {loss:.4f} | "
                f"this {self.unit} {this:.1f} s | total {now - self.start:.1f} s")
        if iteration == 1:
            line += " (the first includes caching the data)"
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self._bar.update(1)
        else:
            print(line, file=self.stream, flush=True)

    def close(self):
        """Close the bar (if any); the lines stay."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class HeldOutScore:
    """A classifier's ``callback(iteration, weights, loss)`` that scores each iteration's
    weights on rows held on the driver and never trained on: what ``fit(validation_data=...)``
    records on one machine, for the Spark estimators' :meth:`setCallback`.

    Parameters
    ----------
    layers : list of int
        The ``layers`` Param (inputs, hidden widths, classes).
    activation : str
        The hidden layers' activation (the ``activation`` Param).
    X : array of shape (n, layers[0])
    y : array of n class indices (Spark's labels 0, 1, ...)
    then : callable or None
        Another callback to call first (e.g. a :class:`TrainingProgress`).

    After training, ``history`` (a :class:`sparkann.optim.History`) holds per iteration the
    training objective (``loss``), the held-out cross-entropy (``val_loss``) and accuracy
    (``val_metric``), computed by the native engine in float32 (dropout is off at inference).
    """

    def __init__(self, layers, activation, X, y, then=None):
        import numpy as np

        from sparkann.optim import History
        from sparkann.topology import Topology

        self.X = np.ascontiguousarray(X, dtype=np.float32)
        self.y = np.asarray(y).astype(np.int64)
        if self.X.shape != (len(self.y), layers[0]):
            raise ValueError(f"held-out rows: X has shape {self.X.shape}, y {len(self.y)} "
                             f"labels, the network {layers[0]} inputs")
        if len(self.y) and not 0 <= self.y.min() <= self.y.max() < layers[-1]:
            raise ValueError(f"held-out labels must be 0..{layers[-1] - 1}, received "
                             f"{self.y.min()}..{self.y.max()}")
        self.network = Topology.from_sizes(layers, activation).network("float32")
        self.then = then
        self.history = History()

    def __call__(self, iteration, weights, loss):
        import numpy as np

        if self.then is not None:
            self.then(iteration, weights, loss)
        p = self.network.forward(np.asarray(weights, np.float32), self.X)
        picked = np.clip(p[np.arange(len(self.y)), self.y], np.finfo(np.float32).eps, 1)
        self.history.append(loss, float(-np.log(picked).mean()),
                            float((p.argmax(1) == self.y).mean()))
