"""Tests of :mod:`parity.report`."""
