"""Tests of the Keras builders, layers, weights loading, preprocessing, training pieces."""
