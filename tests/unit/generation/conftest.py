"""A tiny real bundle with its statistics, fitted once per test module (see `test_worker.fit_everything`)."""

from __future__ import annotations

import pytest

from tests.unit.generation.test_worker import Fitted, fit_everything


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Fitted:
    return fit_everything(tmp_path_factory.mktemp("vae"), conditional=False)


@pytest.fixture(scope="module")
def fitted_conditional(tmp_path_factory: pytest.TempPathFactory) -> Fitted:
    return fit_everything(tmp_path_factory.mktemp("cvae"), conditional=True)
