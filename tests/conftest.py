import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = os.environ.get("CLBENCH_DATA")
    if not path or not Path(path).is_dir():
        pytest.fail("set CLBENCH_DATA to the dataset folder (the one holding mmlu/, mbpp/); tox sets it for you")
    return Path(path)


@pytest.fixture(scope="session")
def tiny():
    from harness import models

    return models.load("tiny")


@pytest.fixture(scope="session")
def smollm2():
    """The real default model (converted from the GGUF once, then cached)."""
    from harness import models

    return models.load(models.SMOLLM2)


@pytest.fixture(scope="session")
def source(data_dir):
    from tasks.data import DataSource

    return DataSource(str(data_dir))


def pytest_collection_modifyitems(items):
    """Every test that loads the real SmolLM2 is `slow` (deselect with -m "not slow")."""
    for item in items:
        if "smollm2" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
