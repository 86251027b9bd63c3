import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = os.environ.get("CLBENCH_DATA")
    if not path or not Path(path).is_dir():
        pytest.fail("set CLBENCH_DATA to the dataset folder (the one holding mmlu/, mbpp/); tox sets it for you")
    return Path(path).resolve()  # absolute: tests run the CLI from other folders


@pytest.fixture(scope="session")
def tiny():
    from harness.model import models

    return models.load("tiny")


@pytest.fixture(scope="session")
def smollm2():
    """The real default model (converted from the GGUF once, then cached)."""
    from harness.model import models

    return models.load(models.SMOLLM2)


@pytest.fixture(scope="session")
def source(data_dir):
    from tasks.data import DataSource

    return DataSource(str(data_dir))


@pytest.fixture(scope="session")
def mmlu_short(source):
    """The n shortest of 4 subjects' MMLU val questions (shuffled with seed 0 before the stable sort)."""
    import random

    pool = [it for subject in ("high_school_geography", "marketing", "astronomy", "philosophy")
            for it in source.mmlu(subject, "val")]
    random.Random(0).shuffle(pool)
    return lambda n: sorted(pool, key=lambda it: len(it.question) + sum(len(o) for o in it.options))[:n]


def pytest_collection_modifyitems(items):
    """Every test that loads the real SmolLM2 is `slow` (the default tox run deselects it; tox -e slow runs it)."""
    for item in items:
        if "smollm2" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
