"""The sparkann command line on a small part of Fashion-MNIST."""
import os
import subprocess
import sys

import numpy as np
import pytest

from sparkann import cli
from sparkann.datasets import DEBIAN_FASHION_MNIST

needs_data = pytest.mark.skipif(not os.path.isdir(DEBIAN_FASHION_MNIST),
                                reason="needs Debian's dataset-fashion-mnist")


@needs_data
def test_train_evaluate_predict(tmp_path, capsys):
    model, plot = str(tmp_path / "m"), str(tmp_path / "curve.png")
    code = cli.main(["train", "--limit", "2000", "--test-limit", "500", "--hidden", "32",
                     "--epochs", "3", "--threads", "1", "--out", model, "--plot", plot,
                     "--dropout", "0.1,0.2", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    accuracy = float(out.split("test accuracy: ")[1].split()[0])
    assert 0.6 < accuracy <= 1.0 and "on 500 rows" in out and "epochs in" in out
    assert os.path.isfile(os.path.join(model, "model.json"))
    assert open(plot, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert "test loss" in out

    assert cli.main(["evaluate", "--model", model, "--limit", "500"]) == 0
    again = float(capsys.readouterr().out.split("test accuracy: ")[1].split()[0])
    assert again == pytest.approx(accuracy)

    assert cli.main(["predict", "--model", model, "--limit", "5"]) == 0
    labels = capsys.readouterr().out.split()
    assert len(labels) == 5 and all(0 <= int(s) <= 9 for s in labels)

    rows = np.random.default_rng(0).random((3, 784))
    np.save(tmp_path / "rows.npy", rows)
    assert cli.main(["predict", "--model", model, "--input", str(tmp_path / "rows.npy"),
                     "--proba", "--output", str(tmp_path / "p.npy")]) == 0
    p = np.load(tmp_path / "p.npy")
    assert p.shape == (3, 10) and np.allclose(p.sum(1), 1, atol=1e-5)


@needs_data
def test_spark_recipe_runs_lbfgs(tmp_path, capsys):
    code = cli.main(["train", "--recipe", "spark", "--limit", "1000", "--test-limit", "300",
                     "--hidden", "16", "--max-iter", "5", "--threads", "1",
                     "--out", str(tmp_path / "m"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "solver='lbfgs'" in out and "activation='sigmoid'" in out
    assert "5 iterations" in out


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert cli.main(["evaluate", "--model", str(tmp_path / "none")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert cli.main(["train", "--data", str(tmp_path), "--no-progress",
                     "--out", str(tmp_path / "m")]) == 2
    assert "no train-images-idx3-ubyte" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--limit", "0"])


def test_other_modules_can_add_a_subcommand(capsys):
    seen = []
    cli.register_command("test-echo", "echo", lambda p: p.add_argument("word"),
                         lambda args: seen.append(args.word))
    try:
        assert cli.main(["test-echo", "hello"]) == 0 and seen == ["hello"]
        with pytest.raises(ValueError, match="already registered"):
            cli.register_command("test-echo", "again", lambda p: None, lambda a: 0)
    finally:
        del cli.COMMANDS["test-echo"]


def test_module_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "sparkann.cli", "--help"], check=True,
                         capture_output=True, text=True).stdout
    assert "train" in out and "evaluate" in out and "predict" in out


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_model_folder_errors_say_what_is_wrong(tmp_path, capsys, command):
    missing = tmp_path / "nowhere"
    assert cli.main([command, "--model", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"--model {missing}: no such folder" in err and "model.json" not in err
    (tmp_path / "file").write_text("x")
    assert cli.main([command, "--model", str(tmp_path / "file")]) == 2
    assert "not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main([command, "--model", str(tmp_path / "empty")]) == 2
    assert "model.json is missing" in capsys.readouterr().err


def test_spark_model_of_mllib_is_named(tmp_path, capsys):
    """A folder of Spark ML's layout holding MLlib's own model: say which and how to load it."""
    pytest.importorskip("pyspark")
    meta = tmp_path / "mllib" / "metadata"
    meta.mkdir(parents=True)
    (meta / "part-00000").write_text(
        '{"class":"org.apache.spark.ml.classification.MultilayerPerceptronClassificationModel",'
        '"paramMap":{"layers":[4,3]}}\n')
    assert cli.main(["evaluate", "--model", str(tmp_path / "mllib")]) == 2
    err = capsys.readouterr().err
    assert "a Spark MLlib model" in err
    assert "spark.ml.classification.MultilayerPerceptronClassificationModel.load" in err


@pytest.fixture
def saved_models(tmp_path):
    from sparkann.estimator import MLPClassifier, MLPRegressor
    X = np.random.default_rng(0).random((40, 4))
    clf, reg = str(tmp_path / "clf"), str(tmp_path / "reg")
    MLPClassifier(hidden_layer_sizes=(3,), max_iter=2).fit(X, (X[:, 0] > 0.5).astype(int)).save(clf)
    MLPRegressor(hidden_layer_sizes=(3,), max_iter=2).fit(X, X.sum(1)).save(reg)
    np.save(tmp_path / "rows.npy", X[:5])
    return clf, reg, str(tmp_path / "rows.npy")


HUGE = ["--layers", "4,2000000,2000000,3", "--examples", "1000", "--flops", "50G"]


@pytest.mark.parametrize("argv, fragment", [
    ("predict --model {reg} --input {rows} --proba", "--proba: the model in"),
    ("evaluate --model {reg}", "a regressor (MLPRegressor); evaluate scores classifiers"),
    ("predict --model {clf} --input {folder}", "--input {folder}: a folder"),
    ("predict --model {clf} --input {rows} --output {folder}", "--output {folder}: a folder"),
    ("predict --model {rows}", "not a folder"),
    ("train --out {rows} --no-progress", "--out {rows}: a file"),
    ("train --plot {folder} --no-progress", "--plot {folder}: a folder"),
    ("scale " + " ".join(HUGE), "4,000,018,000,003 weights: 32,000,144,000,024 bytes"),
    ("scale --layers 4,100000000000000000000000000,3 --examples 10 --flops 1G", "weights: "),
    ("scale --calibrate " + " ".join(HUGE), "4,000,018,000,003 weights"),
], ids=["proba of a regressor", "evaluate a regressor", "input folder", "output folder",
        "model file", "out file", "plot folder", "scale huge", "scale enormous",
        "calibrate huge"])
def test_user_errors_are_one_line_and_exit_code_2(tmp_path, capsys, saved_models, argv,
                                                  fragment):
    clf, reg, rows = saved_models
    names = dict(clf=clf, reg=reg, rows=rows, folder=str(tmp_path))
    assert cli.main(argv.format(**names).split()) == 2
    err = capsys.readouterr().err
    assert fragment.format(**names) in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("command", ["scale --layers 4,10,3 --examples 10 --flops 1G",
                                     "train --no-progress"])
def test_plot_without_matplotlib_is_one_line_before_any_work(tmp_path, capsys, monkeypatch,
                                                             command):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert cli.main([*command.split(), "--plot", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert "--plot needs matplotlib: pip install 'sparkann[plot]'" in err
    assert err.count("\n") == 1
