"""Tests of the tools in `parity`: converter, CLI, to_torch, report, training, comparison."""
