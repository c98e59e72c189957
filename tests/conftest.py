"""One Ray instance and its client actors for all the simulations of a test module.

Each in-process run would otherwise start Ray and actors that import torch and Flower (10 to
20 s before its first round on the CI's 2 cores); `ray_session` is what the bench uses for
the same reason, and it keeps results independent of the reuse. Per module, not per session:
tests/test_faults.py hangs a client on purpose, and an actor it leaves busy must not serve the
next module's runs (so that module runs without it)."""

from collections.abc import Iterator

import pytest

from fedrlprune.fl.simulation import ray_session


@pytest.fixture(scope="module")
def one_ray() -> Iterator[None]:
    """Modules that run simulations ask for it: `pytestmark = pytest.mark.usefixtures(...)`."""
    with ray_session():
        yield
