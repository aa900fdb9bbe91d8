"""Pretraining data transforms (pure numpy): usable from tf.data, grain, PyDataset or a loop.

Import the objective's module, e.g. `from keras_bigmodels.objectives import masked_lm`.
"""
