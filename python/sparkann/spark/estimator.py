"""The training flow shared by the classifier and the regressor."""
import logging
import time

import numpy as np
from pyspark.ml import Estimator
from pyspark.sql import functions as F

from sparkann.hyperparams import array_dtype
from sparkann.spark.checkpointing import TrainingCheckpoint, run_fingerprint
from sparkann.spark.data import cache_blocks, cancel_jobs, warn_round_robin
from sparkann.spark.model import build_topology
from sparkann.spark.persistence import PersistMixin
from sparkann.spark.session import classic_context
from sparkann.spark.shipping import ship_to_executors
from sparkann.spark.train import Trainer

log = logging.getLogger("sparkann.spark")


class _NetworkEstimator(Estimator, PersistMixin):
    """Fit = check Params and columns, stack and cache blocks, run the solver, build the model."""

    _loss = None
    _targets = False
    _model_class = None
    _summary_class = None

    def setCallback(self, callback):
        """Call ``callback(iteration, weights, loss)`` after every iteration (not a Param:
        not saved); raising StopIteration ends training with the current weights."""
        self._callback = callback
        return self

    def _n_out_check(self, layers):
        pass

    def _fit(self, dataset):
        self._validate_params()
        # when run from a --py-files wheel (classic sessions only)
        ship_to_executors(classic_context(dataset.sparkSession))
        layers = self.getLayers()
        self._n_out_check(layers)
        topology = build_topology(layers, self.getActivation(), self._loss, self.dropoutRates())
        seed = self.getSeed()
        if seed is None:                   # seed=None given explicitly: the stable default
            seed = self._defaultParamMap[self.seed]
        if self.isDefined(self.initialWeights):
            w0 = self.getInitialWeights().toArray().astype(np.float64)
            if w0.shape != (topology.n_weights,):
                raise ValueError(f"initialWeights has {w0.size} values, layers {layers} need "
                                 f"{topology.n_weights}")
            if not np.isfinite(w0).all():
                raise ValueError("initialWeights holds non-finite values")
        else:
            w0 = topology.init_weights(seed=seed & 0x7FFFFFFF,
                                       scheme=self.getInitScheme(), dtype="float64")
        train_df, val_df = dataset, None
        if self.isDefined(self.validationIndicatorCol):
            col = self.getValidationIndicatorCol()
            if col not in dataset.columns:
                raise ValueError(f"validationIndicatorCol {col!r} is not in the DataFrame; its "
                                 f"columns are {dataset.columns}")
            train_df = dataset.filter(~F.col(col))
            val_df = dataset.filter(F.col(col))
        warn_round_robin(dataset)
        dtype, block_size = self.getDtype(), self.getBlockSize()
        weight_col = self.weightColumn()
        start = time.perf_counter()
        blocks = cache_blocks(train_df, self.getFeaturesCol(), self.getLabelCol(), layers[0],
                              layers[-1], dtype=array_dtype(dtype), block_size=block_size,
                              targets=self._targets, weight_col=weight_col)
        validation = None
        try:
            if val_df is not None:
                validation = cache_blocks(
                    val_df, self.getFeaturesCol(), self.getLabelCol(), layers[0], layers[-1],
                    dtype=array_dtype(dtype), block_size=block_size, targets=self._targets,
                    empty=f"the validation set is empty: validationIndicatorCol {col!r} is "
                          f"False (or null) on every row", weight_col=weight_col)
            log.info("cached %d rows in %d blocks over %d partitions in %.2f s",
                     blocks.n_rows, blocks.n_blocks, blocks.n_partitions,
                     time.perf_counter() - start)
            checkpoint = None
            if self.getCheckpointDir():
                checkpoint = TrainingCheckpoint(self.getCheckpointDir(),
                                                self.getCheckpointInterval(),
                                                run_fingerprint(self, topology, w0, blocks))
            trainer = Trainer(blocks, topology, dtype=dtype, block_size=block_size,
                              solver=self.getSolver(), max_iter=self.getMaxIter(),
                              tol=self.getTol(), step_size=self.getStepSize(),
                              reg_param=self.getRegParam(), seed=seed,
                              sync_steps=self.getSyncSteps(), momentum=self.getMomentum(),
                              step_size_schedule=self.getStepSizeSchedule(),
                              validation=validation,
                              patience=self.getEarlyStoppingPatience(),
                              callback=getattr(self, "_callback", None),
                              step_size_set=self.isSet(self.stepSize),
                              checkpoint=checkpoint)
            w = trainer.run(w0)
        except KeyboardInterrupt:
            cancel_jobs(dataset.sparkSession)
            raise
        finally:
            blocks.unpersist()
            if validation is not None:
                validation.unpersist()
        model = self._model_class(weights=w, history=trainer.history)
        model._resetUid(self.uid)
        self._copyValues(model)
        model._topology = topology
        model.gradient_seconds = list(trainer.loss_grad.seconds)
        model.iteration_seconds = list(trainer.seconds)
        model.validation_history = list(trainer.val_history)
        model._checked_input = True  # stacking checked these rows: no second pass
        try:
            model._summary = model.evaluate(dataset if val_df is None else train_df)
        finally:
            model._checked_input = False
        model._summary.objectiveHistory = list(trainer.history)
        model._summary.totalIterations = len(trainer.history)
        return model
