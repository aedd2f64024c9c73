"""pyspark's own MultilayerPerceptronClassifier doctest, run on sparkann's classes."""
import doctest

# pyspark's doctest lines that print numbers of the trained network: ours starts from another
# random initialisation (and trains in float32), so its raw scores differ while its
# predictions (also checked by the doctest) are the same.
TRAINED_NUMBERS = ("model.predictRaw(", "model.predictProbability(")


def run_mlpc_doctest(spark, folder):
    """Run the doctest's examples (less the trained numbers) with ``spark`` and our classes;
    return ``(runner, kept examples, failure text)``."""
    from pyspark.ml import classification as mllib

    from sparkann.spark import MultilayerPerceptronClassificationModel, \
        MultilayerPerceptronClassifier
    text = mllib.MultilayerPerceptronClassifier.__doc__
    examples = doctest.DocTestParser().get_examples(text)
    kept = [e for e in examples if not e.source.startswith(TRAINED_NUMBERS)]
    assert len(examples) - len(kept) == len(TRAINED_NUMBERS)
    assert len(kept) > 25       # the doctest as pyspark 4 ships it, not an empty one
    globs = {"spark": spark, "temp_path": str(folder),
             "MultilayerPerceptronClassifier": MultilayerPerceptronClassifier,
             "MultilayerPerceptronClassificationModel": MultilayerPerceptronClassificationModel}
    test = doctest.DocTest(kept, globs, "pyspark.ml.classification.MultilayerPerceptronClassifier",
                           None, 0, text)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    failures = []
    runner.run(test, out=failures.append)
    return runner, kept, "".join(failures)
