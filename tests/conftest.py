"""Set-up shared by the test modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

# The lanes kernels compiled for the two networks of the tests that use them (test_kernel.py, test_golden.py)
# take ~40 s each to compile. A second process compiles them into numba's on-disk cache on the other core while
# the first tests run; a test that needs one before it is ready compiles it itself, as without this.
_COMPILE_SPECIALISED = """
from palmc.engine.compiled import driver
from tests.test_kernel import SPECIALISED_1_1_1, SPECIALISED_DEEP, make_sim
for params in (SPECIALISED_1_1_1, SPECIALISED_DEEP):
    driver.advance(make_sim(params, seeds=tuple(range(len(params)))), 1, layout="lanes", specialise=True)
"""


@pytest.fixture(scope="session", autouse=True)
def specialised_kernels_compiled_alongside() -> Iterator[None]:
    process = subprocess.Popen([sys.executable, "-c", _COMPILE_SPECIALISED], cwd=Path(__file__).parent.parent,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield
    process.kill()
    process.wait()
