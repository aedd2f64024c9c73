"""sparkann on Apache Spark: pyspark.ml estimators trained with the native engine in the
executors. This is the only part of sparkann that imports pyspark."""
from sparkann.spark.autoencoder import StackedAutoencoder, StackedAutoencoderModel
from sparkann.spark.classifier import MultilayerPerceptronClassifier
from sparkann.spark.model import (ClassificationSummary, MultilayerPerceptronClassificationModel,
                                  MultilayerPerceptronRegressionModel, RegressionSummary)
from sparkann.spark.model_files import SparkModelFileError
from sparkann.spark.regressor import MultilayerPerceptronRegressor

__all__ = ["MultilayerPerceptronClassifier", "MultilayerPerceptronClassificationModel",
           "MultilayerPerceptronRegressor", "MultilayerPerceptronRegressionModel",
           "ClassificationSummary", "RegressionSummary", "SparkModelFileError",
           "StackedAutoencoder", "StackedAutoencoderModel"]
