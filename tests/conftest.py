"""One Ray instance and its client actors for all the simulations the tests run in-process.

Each in-process run would otherwise start Ray and actors that import torch and Flower (about
20 s before its first round on the CI's 2 cores); `ray_session` is what the bench uses for the
same reason, and it keeps results independent of the reuse. tests/test_faults.py hangs a
client on purpose and runs without it: it is moved to the front, before the shared Ray
starts, so no actor it leaves busy serves another test's runs."""

from collections.abc import Iterator

import pytest

from fedrlprune.fl.simulation import ray_session

ALONE = "test_faults.py"  # runs before the shared Ray exists


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name != ALONE)  # stable: the rest keep their order


@pytest.fixture(scope="session")
def one_ray() -> Iterator[None]:
    """Modules that run simulations ask for it: `pytestmark = pytest.mark.usefixtures(...)`."""
    with ray_session():
        yield
