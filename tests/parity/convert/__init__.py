"""Tests of :mod:`parity.convert`."""
