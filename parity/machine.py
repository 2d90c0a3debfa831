"""What a measurement ran on: the CPU and the package versions, for reports and benchmarks.

Reads ``/proc/cpuinfo`` and package metadata; imports no framework.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path

__all__ = ["PACKAGES", "cpu_name", "package_versions"]

#: The packages whose versions the parity figures depend on.
PACKAGES = ("torch", "torchvision", "tensorflow", "keras", "jax", "jaxlib", "numpy")


def cpu_name() -> str:
    """The CPU's model name, core count and whether it has AVX-512 (from /proc/cpuinfo on Linux)."""
    name, flags = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in ("", platform.processor(), platform.machine()):
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = value
    except OSError:
        pass
    extra = ", AVX-512" if "avx512f" in flags.split() else ""
    return f"{name} ({os.cpu_count()} vCPUs{extra})"


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages``, from their metadata (nothing is imported); absent ones are left out."""
    versions = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions
