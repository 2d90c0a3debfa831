"""Tests of :mod:`parity.cifar`."""
