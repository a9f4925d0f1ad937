"""The batch cap of each service when MOM_BATCH_MAX_EVENTS is not set, and the variable's rule."""
import pytest

from services.common.settings import Settings

URL = {"MOM_DATABASE_URL": "postgresql://mom@db/mom"}


def test_execution_takes_larger_batches_than_the_other_services_by_default():
    assert Settings.from_env("execution", URL).batch_max_events == 20000
    for service in ("quality", "maintenance", "inventory"):
        assert Settings.from_env(service, URL).batch_max_events == 10000


def test_the_variable_sets_the_cap_of_any_service():
    assert Settings.from_env("execution", {**URL, "MOM_BATCH_MAX_EVENTS": "300"}).batch_max_events == 300


def test_a_cap_below_one_is_refused_naming_the_variable():
    with pytest.raises(ValueError, match="MOM_BATCH_MAX_EVENTS"):
        Settings.from_env("quality", {**URL, "MOM_BATCH_MAX_EVENTS": "0"})
