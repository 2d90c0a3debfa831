"""Tests of the torch builders and their torchvision API."""
