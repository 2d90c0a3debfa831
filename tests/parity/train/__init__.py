"""Tests of :mod:`parity.train`."""
