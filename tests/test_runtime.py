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
def faults_of_one_block():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(64 * 2**20 // 4)  # 64 MiB written and freed, like one activation of a 1024 generator
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_one_block()
print(json.dumps({"applied": applied, "faults": faults_of_one_block()}))
"""


def probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or ctypes.util.find_library("c") is None, reason="needs glibc")
def test_retained_heap_reuses_freed_blocks_without_page_faults():
    default, retained = probe("system"), probe("retain")
    pages = 64 * 2**20 // 4096
    assert retained["applied"] is True
    # Without the setting the second 64 MiB block is a fresh mapping: every page faults again.
    assert default["faults"] > pages // 2
    assert retained["faults"] < pages // 16

