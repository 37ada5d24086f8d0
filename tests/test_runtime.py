"""The CPU heap setting: freed activation-sized blocks are reused without faulting their pages in again."""

from __future__ import annotations

import ctypes.util
import json
import platform
import subprocess
import sys

import pytest

# A child process: the setting is process-wide and lasts until exit, so it must not leak into the test session.
PROBE = """
import json, resource, sys, torch
from nada.runtime import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else False
conv = torch.nn.Conv2d(16, 16, 3, padding=1)
def faults_of_one_pass():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with torch.no_grad():  # 64 MiB activations, like one layer of a 1024 generator
        torch.nn.functional.leaky_relu(conv(torch.ones(1, 16, 1024, 1024)))
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_one_pass()
print(json.dumps({"applied": applied, "faults": sum(faults_of_one_pass() for _ in range(7))}))
"""


def probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or ctypes.util.find_library("c") is None, reason="needs glibc")
def test_retained_heap_reuses_freed_blocks_without_page_faults():
    default, retained = probe("system"), probe("retain")
    pages = 7 * 3 * 64 * 2**20 // 4096  # seven passes, three 64 MiB blocks each
    assert retained["applied"] is True
    # Without the setting every 64 MiB block is a fresh mapping: every page faults again, pass after pass.
    assert default["faults"] > pages // 2
    assert retained["faults"] < default["faults"] // 8
