"""The kohya config: templates merged with `config_params`, and the TOML writer (read back with `tomllib`)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import tomllib

from middleware_api.services.errors import BadRequest
from middleware_api.services.kohya_config import MAX_TOML_BYTES, build_config, dump_toml
from middleware_api.services.training_templates import TEMPLATES


@pytest.mark.parametrize("fm_type", sorted(TEMPLATES))
def test_each_template_round_trips(fm_type: str) -> None:
    config = build_config(fm_type, None)
    assert tomllib.loads(dump_toml(config)) == config
    assert config["saving"]["save_model_as"] == "safetensors"


def test_sdxl_differs_where_it_must() -> None:
    xl, sd15 = TEMPLATES["sd_xl"], TEMPLATES["sd_1_5"]
    assert xl["dataset"]["resolution"] == "1024,1024" and sd15["dataset"]["resolution"] == "512,512"
    assert "clip_skip" not in xl["training"] and sd15["training"]["clip_skip"] == 2


def test_awkward_values_round_trip() -> None:
    values: dict[str, Any] = {
        "quote": 'say "hi" \\ back',
        "controls": "tab\there\nnew line\r\x00\x1f\x7f\b\f",
        "unicode": "乐高 é 🧱",
        "empty": "",
        "tiny": 1e-07,
        "huge": 1.5e300,
        "negative": -0.0,
        "whole": 3.0,
        "ints": [-(2**63), 2**63 - 1, 0],
        "mixed": ["a", 1, 2.5, True],
        "none": [],
        "bool": False,
    }
    config = {"odd section": {"key with space": 1, "dotted.key": 2}, "training": values}
    assert tomllib.loads(dump_toml(config)) == config


def test_merge_types_places_and_ignores() -> None:
    config = build_config(
        "sd_1_5",
        {
            "training": {
                "max_train_epochs": 50,
                "optimizer_type": "Lion",  # belongs to [optimizer]
                "learning_rate": 1,  # an integer is a number: kept as a float
                "network_args": ["conv_dim=4", "conv_alpha=1"],  # unknown: kept as given
                "output_dir": "/my/local/path",  # the trainers' business: ignored
                "pretrained_model_name_or_path": "C:/models/x.safetensors",
            },
            "optimizer": {"optimizer_args": ["weight_decay=0.01"]},
        },
    )
    assert config["training"]["max_train_epochs"] == 50 and config["optimizer"]["optimizer_type"] == "Lion"
    assert config["optimizer"]["learning_rate"] == 1.0 and isinstance(config["optimizer"]["learning_rate"], float)
    assert "optimizer_type" not in config["training"] and "learning_rate" not in config["training"]
    assert config["training"]["network_args"] == ["conv_dim=4", "conv_alpha=1"]
    assert "output_dir" not in str(config) and "pretrained_model_name_or_path" not in str(config)
    assert TEMPLATES["sd_1_5"]["training"]["max_train_epochs"] == 10  # the template itself is untouched
    assert tomllib.loads(dump_toml(config)) == config


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([], "config_params must be an object"),
        ({"sample": {}}, "unknown section 'sample'"),
        ({"training": 5}, "config_params.training must be an object"),
        ({"training": {"max_train_epochs": True}}, "must be an integer, not true"),
        ({"training": {"cache_latents": 1}}, "must be true or false, not 1"),
        ({"training": {"mixed_precision": 16}}, "must be a string, not 16"),
        ({"training": {"x": math.inf}}, "is not a finite number"),
        ({"training": {"x": math.nan}}, "is not a finite number"),
        ({"training": {"x": -(2**63) - 1}}, "too large for TOML"),
        ({"training": {"x": "\ud800"}}, "not valid Unicode"),
        ({"training": {"x": [1, None]}}, "config_params.training.x[1]: null"),
        ({"training": {"x": [{"a": 1}]}}, "config_params.training.x[0]: an object"),
        ({"training": {"1x": 1}}, "'1x' is not a kohya argument name"),
        ({"training": {"x": "y" * MAX_TOML_BYTES}}, "larger than 64 KiB"),
    ],
)
def test_merge_refusals_name_the_value(params: Any, expected: str) -> None:
    with pytest.raises(BadRequest, match=None) as caught:
        dump_toml(build_config("sd_1_5", params))
    assert expected in caught.value.message
