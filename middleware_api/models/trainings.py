"""Request bodies of the trainings routes."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import StringConstraints

from middleware_api.models.common import Name, NameList, Request

Location = Annotated[str, StringConstraints(min_length=1, max_length=2048)]
Short = Annotated[str, StringConstraints(max_length=64)]


class TrainingParams(Request):
    training_instance_type: Short | None = None
    fm_type: Short
    s3_model_path: Location | None = None
    s3_data_path: Location | None = None
    model: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    dataset: Name | None = None


class TrainingJobParams(Request):
    training_params: TrainingParams
    # checked by the service, which names the section or argument at fault
    config_params: dict[str, Any] | None = None


class CreateTraining(Request):
    lora_train_type: Short = "kohya"
    params: TrainingJobParams


class DeleteTrainings(Request):
    training_id_list: NameList
