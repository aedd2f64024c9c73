"""Callbacks: TrainingProgress (each round's time and the total; a tqdm bar on a terminal only),
HeldOutScore."""
import fcntl
import io
import os
import re
import select
import struct
import termios
import time

import pytest

from sparkann.progress import TrainingProgress

LINE = re.compile(r"round (\d)/3: loss ([0-9.]+) \| this round ([0-9.]+) s \| "
                  r"total ([0-9.]+) s")


def test_lines_give_the_round_time_and_the_total():
    out = io.StringIO()
    progress = TrainingProgress(3, stream=out)
    for r in (1, 2, 3):
        time.sleep(0.15)
        progress(r, None, 1.0 / r)
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in out.getvalue()  # no bar: not a terminal
    assert "the first includes caching the data" in lines[0]
    parsed = [LINE.match(line).groups() for line in lines]
    assert [p[0] for p in parsed] == ["1", "2", "3"]
    assert [float(p[1]) for p in parsed] == [1.0, 0.5, 0.3333]
    rounds = [float(p[2]) for p in parsed]
    totals = [float(p[3]) for p in parsed]
    assert all(0.1 <= s < 2 for s in rounds)        # each round, not the time so far
    assert totals[0] < totals[1] < totals[2]        # the total grows
    assert abs(totals[2] - sum(progress.round_seconds)) < 0.1


def test_iterations_are_named_as_such():
    out = io.StringIO()
    TrainingProgress(10, unit="iteration", stream=out)(7, None, 0.25)
    assert out.getvalue().startswith("iteration  7/10: loss 0.2500 | this iteration ")


def test_a_terminal_gets_a_bar_above_which_the_lines_stay():
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    try:
        with os.fdopen(slave, "w") as terminal:
            with TrainingProgress(3, stream=terminal) as progress:
                assert progress.use_bar
                for r in (1, 2, 3):
                    progress(r, None, 0.5)
                terminal.flush()
        text = b""
        while select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            text += chunk
    finally:
        os.close(master)
    text = text.decode(errors="replace")
    assert "\r" in text and "training" in text and "3/3" in text  # tqdm's bar
    assert len(re.findall(r"round \d/3: loss 0\.5000 \| this round", text)) == 3


def test_held_out_score_records_loss_and_accuracy_of_each_iterations_weights():
    import numpy as np

    from sparkann.progress import HeldOutScore
    from sparkann.topology import Topology

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 6)), rng.integers(0, 3, 50)
    topology = Topology.from_sizes([6, 5, 3], "relu")
    calls = []
    watch = HeldOutScore([6, 5, 3], "relu", X, y, then=lambda *a: calls.append(a[0]))
    for i, seed in enumerate((1, 2), start=1):
        w = topology.init_weights(seed=seed, scheme="he", dtype="float64")
        watch(i, w, 0.5 * i)
        p = topology.network("float64").forward(w, X)
        assert watch.history.val_loss[-1] == pytest.approx(
            -np.log(p[np.arange(50), y]).mean(), rel=1e-5)
        assert watch.history.val_metric[-1] == pytest.approx((p.argmax(1) == y).mean())
    assert calls == [1, 2] and watch.history.loss == [0.5, 1.0]
    with pytest.raises(ValueError, match=r"X has shape \(50, 6\), y 50 labels, the network 7"):
        HeldOutScore([7, 3], "relu", X, y)
    with pytest.raises(ValueError, match="labels must be 0..1"):
        HeldOutScore([6, 2], "relu", X, y)
