"""The ``sparkann`` command line: ``sparkann train / evaluate / predict / scale``.

Subcommands live in a table; a module adds one with :func:`register_command`.
"""
import argparse
import importlib.util
import os
import sys
import time

import numpy as np

from sparkann import layers, solvers
from sparkann.scaling import cli as scaling_cli

#: name -> (help, add_arguments(parser), run(args) -> exit code)
COMMANDS = {}

RECIPES = {
    # Spark MLlib's MultilayerPerceptronClassifier defaults
    "spark": dict(hidden=[256, 128], activation="sigmoid", solver="lbfgs", max_iter=100,
                  tol=1e-6, block_size=128, init="spark", alpha=0.0),
    "adam": dict(hidden=[256, 128], activation="relu", solver="adam", max_iter=20,
                 learning_rate_init=0.002, batch_size=128, learning_rate="cosine", alpha=0.0),
}


def register_command(name, help, add_arguments, run):
    """Add the subcommand ``name``: ``add_arguments(parser)`` declares its options and
    ``run(args)`` does the work, returning an exit code (0 for success)."""
    if name in COMMANDS:
        raise ValueError(f"the subcommand {name!r} is already registered")
    COMMANDS[name] = (help, add_arguments, run)


# ----------------------------------------------------------------------------- data

def _limit(X, y, n):
    return (X, y) if n is None else (X[:n], y[:n])


def _load(args, kind):
    from sparkann.datasets import load_fashion_mnist

    X, y = load_fashion_mnist(args.data, kind=kind, dtype=getattr(args, "dtype", "float32"))
    n = args.limit if kind == "train" else (args.test_limit or args.limit)
    return _limit(X, y, n)


def _data_arguments(parser):
    parser.add_argument("--data", metavar="DIR",
                        help="directory with the Fashion-MNIST IDX files (default: Debian's "
                             "dataset-fashion-mnist, or $SPARKANN_DATA)")
    parser.add_argument("--limit", type=_positive, metavar="N", help="use the first N rows")
    parser.add_argument("--test-limit", type=_positive, metavar="N",
                        help="use the first N test rows (default: --limit)")


def _positive(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text}")
    return value


def _comma_list(convert, what):
    """An argparse type: comma-separated numbers, e.g. ``what="sizes such as 256,128"``."""
    def parse(text):
        try:
            return [convert(s) for s in text.split(",") if s.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, received {text!r}") from None
    return parse


_sizes = _comma_list(int, "sizes such as 256,128")
_float_list = _comma_list(float, "rates such as 0.2,0.5")


def _rates(text):
    rates = _float_list(text)
    return rates[0] if len(rates) == 1 else rates


# ----------------------------------------------------------------------------- train

def _train_arguments(p):
    _data_arguments(p)
    p.add_argument("--recipe", choices=sorted(RECIPES), default="adam",
                   help="preset: 'adam' ([256,128] ReLU, Adam 0.002 with cosine decay, 20 "
                        "epochs) or 'spark' (Spark MLlib's defaults: sigmoid, L-BFGS, 100 "
                        "iterations, block 128)")
    p.add_argument("--hidden", type=_sizes, metavar="SIZES", help="hidden sizes, e.g. 256,128")
    p.add_argument("--activation", help=layers.activation_list())
    p.add_argument("--solver", choices=solvers.NAMES)
    p.add_argument("--max-iter", "--epochs", dest="max_iter", type=_positive,
                   help="epochs (adam, sgd) or iterations (lbfgs, gd)")
    p.add_argument("--lr", dest="learning_rate_init", type=float,
                   help="learning rate (learning_rate_init)")
    p.add_argument("--schedule", dest="learning_rate",
                   choices=["constant", "invscaling", "adaptive", "cosine", "inverse_sqrt"],
                   help="learning-rate schedule over the run (learning_rate)")
    p.add_argument("--batch-size", type=_positive)
    p.add_argument("--alpha", type=float, help="L2 penalty alpha / (2 n) * ||W||^2")
    p.add_argument("--block-size", type=_positive)
    p.add_argument("--dropout", type=_rates, metavar="RATES",
                   help="inverted dropout (adam, sgd): one rate after every hidden layer, or "
                        "the input's rate then each hidden layer's, e.g. 0.2,0.5")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--early-stopping", action="store_true",
                   help="hold out 10%% for validation, keep the best weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive,
                   help="BLAS threads (at most the machine's CPUs: more count as that)")
    p.add_argument("--out", default="sparkann-model", metavar="DIR",
                   help="where to save the model (default: ./sparkann-model)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw the training and test loss per epoch (matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _train(args):
    from sparkann.estimator import MLPClassifier

    if os.path.exists(args.out) and not os.path.isdir(args.out):  # before, not after, training
        raise ValueError(f"--out {args.out}: a file; the model is saved as a folder")

    settings = dict(RECIPES[args.recipe])
    for key in ("hidden", "activation", "solver", "max_iter", "learning_rate_init",
                "learning_rate", "batch_size", "alpha", "block_size", "dropout"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    hidden = settings.pop("hidden")
    clf = MLPClassifier(hidden_layer_sizes=tuple(hidden), dtype=args.dtype,
                        random_state=args.seed,
                        n_threads=args.threads, early_stopping=args.early_stopping,
                        verbose=not args.no_progress, **settings)
    X, y = _load(args, "train")
    X_test, y_test = _load(args, "test")
    print(f"training {clf!r} on {len(X)} rows")
    start = time.perf_counter()
    # the test rows are watched for the plot's test-loss curve, never trained on
    clf.fit(X, y, validation_data=(X_test, y_test) if args.plot else None)
    seconds = time.perf_counter() - start
    accuracy = clf.score(X_test, y_test)
    mini_batch = solvers.get_solver(clf.solver).mini_batch
    print(f"{clf.n_iter_} {'epochs' if mini_batch else 'iterations'} "
          f"in {seconds:.1f} s; final training loss {clf.loss_:.4f}")
    print(f"test accuracy: {accuracy:.4f} on {len(X_test)} rows")
    if args.plot:
        print(f"test loss: {clf.history_.val_loss[-1]:.4f} (each epoch's in the plot)")
    clf.save(args.out)
    print(f"model saved to {args.out}")
    if args.plot:
        from sparkann.plots import network_name, save_training_plot

        save_training_plot(args.plot, clf.history_, network=network_name(clf),
                           solver=clf.solver, accuracy=accuracy,
                           per="epoch" if mini_batch else "iteration",
                           watched="test", dropout=settings.get("dropout"))
        print(f"training curve drawn to {args.plot}")
    return 0


# ------------------------------------------------------------------- evaluate, predict

def _model_arguments(p):
    p.add_argument("--model", default="sparkann-model", metavar="DIR",
                   help="saved model directory: by 'sparkann train', or by the Spark "
                        "estimators' save (default: ./sparkann-model)")


def _load_model(path):
    """The model saved in the folder ``path``: by ``sparkann train`` / ``MLPClassifier.save``, or
    by the Spark estimators (Spark ML's ``metadata/`` and ``data/``, read without Spark)."""
    from sparkann.persist import load

    if not os.path.exists(path):
        raise FileNotFoundError(f"--model {path}: no such folder")
    if not os.path.isdir(path):
        raise ValueError(f"--model {path}: not a folder (a saved model is a folder)")
    if not os.path.isdir(os.path.join(path, "metadata")):
        return load(path)
    try:
        from sparkann.spark.local_model import load_local
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith(("pyspark", "pyarrow")):
            raise
        raise ValueError(f"{path} holds a model saved by sparkann.spark (Spark ML's layout); "
                         "reading it needs pyspark and pyarrow: pip install 'sparkann[spark]'. "
                         "In Spark, load it with sparkann.spark."
                         "MultilayerPerceptronClassificationModel.load(path)") from None
    return load_local(path)


def _evaluate_arguments(p):
    _model_arguments(p)
    _data_arguments(p)


def _evaluate(args):
    model = _load_model(args.model)
    if not hasattr(model, "classes_"):
        raise ValueError(f"--model {args.model}: a regressor ({type(model).__name__}); evaluate "
                         "scores classifiers against Fashion-MNIST's class labels")
    args.dtype = model.dtype
    X, y = _load(args, "test")
    start = time.perf_counter()
    score = model.score(X, y)
    name = "accuracy" if hasattr(model, "classes_") else "R^2"
    print(f"test {name}: {score:.4f} on {len(X)} rows ({time.perf_counter() - start:.2f} s)")
    return 0


def _predict_arguments(p):
    _model_arguments(p)
    _data_arguments(p)
    p.add_argument("--input", metavar="FILE",
                   help="rows to predict: .npy, .csv or an IDX images file (default: the "
                        "Fashion-MNIST test images)")
    p.add_argument("--output", metavar="FILE",
                   help="write predictions to FILE (.npy, else text); default: stdout")
    p.add_argument("--proba", action="store_true", help="class probabilities, not labels")


def _read_rows(path):
    from sparkann.datasets import read_idx

    if os.path.isdir(path):
        raise ValueError(f"--input {path}: a folder; expected a .npy, .csv or IDX file")
    if path.endswith(".npy"):
        X = np.load(path, allow_pickle=False)
    elif path.endswith(".csv"):
        X = np.loadtxt(path, delimiter=",", ndmin=2)
    else:
        X = read_idx(path)
        X = X.reshape(len(X), -1) / (255.0 if X.dtype == np.uint8 else 1.0)
    return X


def _predict(args):
    model = _load_model(args.model)
    if args.proba and not hasattr(model, "predict_proba"):
        raise ValueError(f"--proba: the model in {args.model} is a regressor "
                         f"({type(model).__name__}); only classifiers give probabilities")
    if args.output and os.path.isdir(args.output):
        raise ValueError(f"--output {args.output}: a folder; expected a file name")
    if args.input:
        X = _limit(_read_rows(args.input), np.zeros(0), args.limit)[0]
    else:
        args.dtype = model.dtype
        X, _ = _load(args, "test")
    out = model.predict_proba(X) if args.proba else model.predict(X)
    if args.output and args.output.endswith(".npy"):
        np.save(args.output, out)
    elif args.output:
        np.savetxt(args.output, out, fmt="%d" if out.dtype.kind == "i" else "%.6g",
                   delimiter=",")
    else:
        np.savetxt(sys.stdout, out, fmt="%d" if out.dtype.kind == "i" else "%.6g",
                   delimiter=",")
    return 0


register_command("train", "train a classifier on Fashion-MNIST, report test accuracy, save it",
                 _train_arguments, _train)
register_command("evaluate", "score a saved model on the Fashion-MNIST test set",
                 _evaluate_arguments, _evaluate)
register_command("predict", "predict with a saved model", _predict_arguments, _predict)
register_command("scale", scaling_cli.HELP, scaling_cli.add_arguments, scaling_cli.command)


# ----------------------------------------------------------------------------- entry

def build_parser():
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="sparkann",
                                     description="Train and use neural networks (sparkann).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def _check_plot(args):
    """``--plot`` (train, scale) fails before the work, not after it."""
    plot = getattr(args, "plot", None)
    if not plot:
        return
    if importlib.util.find_spec("matplotlib") is None:
        raise ValueError("--plot needs matplotlib: pip install 'sparkann[plot]'")
    if os.path.isdir(plot):
        raise ValueError(f"--plot {plot}: a folder; expected an image file name such as "
                         "curve.png")


def _one_line(error):
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    if isinstance(error, ImportError) and error.name:
        return f"{error} (pip install {error.name.split('.')[0]})"
    return " ".join(str(error).split()) or type(error).__name__


def main(argv=None):
    """Run the command line; returns the exit code. Errors of the user's making (bad values,
    files, a network too large for memory, a missing optional package) print one line and
    return 2."""
    args = build_parser().parse_args(argv)
    try:
        _check_plot(args)
        return COMMANDS[args.command][2](args) or 0
    except (ValueError, OSError, MemoryError, ImportError) as e:
        print(f"sparkann {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
