"""Fixtures for the chaos suite: labs from the lab tests' own factory (unique names, torn down by name
whatever happens), the root-namespace snapshot they use, and a seed that is printed so a failing run can
be replayed (PODNET_CHAOS_SEED=<seed>)."""

from __future__ import annotations

import importlib.util
import os
import random
from pathlib import Path

import pytest

# The lab tests' conftest holds the Lab helper, lab_factory and root_snapshot. Conftest modules are not
# importable by name (each is loaded as a fresh "conftest"), so load that file once under its own name.
_spec = importlib.util.spec_from_file_location(
    "podnet_tests_lab_conftest", Path(__file__).resolve().parents[1] / "integration" / "lab" / "conftest.py")
assert _spec is not None and _spec.loader is not None
lab_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lab_conftest)

Lab = lab_conftest.Lab
root_snapshot = lab_conftest.root_snapshot
# The same fixtures, registered for this folder too: lab_factory, and root_state (-> root_snapshot).
lab_factory = lab_conftest.lab_factory
root_state = lab_conftest.root_state


@pytest.fixture
def chaos_seed() -> int:
    seed = int(os.environ.get("PODNET_CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\nchaos seed: {seed} (replay with PODNET_CHAOS_SEED={seed})")
    return seed
