"""The embedded backend's cap on instances per endpoint (`ESD_LOCAL_MAX_INSTANCES`): each local instance is a
worker process calling the one local engine, so a larger endpoint is refused before anything is written;
SageMaker endpoints have no such cap of ours."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import API_KEY, Api

from middleware_api.container import build_services
from middleware_api.settings import DEFAULT_LOCAL_MAX_INSTANCES, Settings, SettingsError

BODY = {
    "endpoint_name": "big",
    "endpoint_type": "Async",
    "instance_type": "ml.g4dn.xlarge",
    "initial_instance_count": 1,
    "autoscaling_enabled": False,
    "assign_to_roles": ["IT Operator"],
}


@pytest.mark.parametrize(
    "change,field",
    [
        ({"initial_instance_count": 5}, "initial_instance_count 5"),
        ({"autoscaling_enabled": True, "max_instance_number": 5}, "max_instance_number 5"),
    ],
)
def test_endpoints_above_the_local_limit_are_refused_on_embedded_only(api: Api, change: dict, field: str) -> None:
    response = api.post("/endpoints", BODY | change)
    if api.services.settings.backend == "aws":
        assert response.status_code == 200, response.text
        assert response.json()["data"]["endpoint_status"] == "Creating"
        return
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert field in message and "limit of 4 instances" in message and "ESD_LOCAL_MAX_INSTANCES" in message
    assert api.get("/endpoints").json()["data"]["endpoints"] == []
    assert api.services.endpoints.find_by_name("esd-async-big") is None
    assert api.services.compute.endpoint_status("esd-async-big") is None  # type: ignore[attr-defined]
    # the name was not claimed either: the same endpoint within the limit is accepted
    assert api.post("/endpoints", BODY).status_code == 200


def test_the_local_instance_limit_setting(tmp_path: Path) -> None:
    assert Settings.from_env({}).local_max_instances == DEFAULT_LOCAL_MAX_INSTANCES == 4
    assert Settings.from_env({"ESD_LOCAL_MAX_INSTANCES": "2"}).local_max_instances == 2
    for wrong in ("0", "-1", "1.5", "four"):
        with pytest.raises(SettingsError, match="ESD_LOCAL_MAX_INSTANCES must be a positive whole number of instances"):
            Settings.from_env({"ESD_LOCAL_MAX_INSTANCES": wrong})
    services = build_services(Settings(data_dir=tmp_path / "data", api_key=API_KEY, local_max_instances=2))
    try:
        assert services.compute.max_instances == 2
    finally:
        services.close()
