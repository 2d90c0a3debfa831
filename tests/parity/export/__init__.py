"""Tests of :mod:`parity.export`."""
