"""Tests of `parity.core`: schema, presets, catalog."""
