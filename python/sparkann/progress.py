"""Training progress for the Spark estimators' callback: each round's time and the total.

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
