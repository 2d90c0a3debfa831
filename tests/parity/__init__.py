"""Tests of the tools in `parity`: one folder per command, cross-cutting ones at this level."""
