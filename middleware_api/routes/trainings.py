"""Trainings routes: create (and start) a LoRA training job, list, get, stop, delete."""

from typing import Annotated

from fastapi import APIRouter, Path, Response

from middleware_api.models.responses import answers, paged
from middleware_api.models.trainings import CreateTraining, DeleteTrainings
from middleware_api.routes.deps import ActorDep, PageDep, ServicesDep
from middleware_api.routes.envelope import respond

router = APIRouter(tags=["trainings"])

JobId = Annotated[str, Path(alias="jobId", description="the training job's id")]


@router.post(
    "/trainings",
    operation_id="CreateTrainingJob",
    summary="Create and start a LoRA training job (kohya)",
    responses=answers(200),
)
def create_training(body: CreateTraining, services: ServicesDep, actor: ActorDep) -> Response:
    job = services.trainings.create(
        actor,
        lora_train_type=body.lora_train_type,
        training_params=body.params.training_params.model_dump(),
        config_params=body.params.config_params,
    )
    return respond(200, "OK", job)


@router.get(
    "/trainings",
    operation_id="ListTrainingJobs",
    summary="List the training jobs the acting user may see",
    responses=answers(200, model=paged("trainings")),
)
def list_trainings(services: ServicesDep, actor: ActorDep, page: PageDep) -> Response:
    result = services.trainings.list(actor, page.limit, page.cursor)
    return respond(200, "OK", {"trainings": result.items, "last_evaluated_key": result.cursor})


@router.get(
    "/trainings/{jobId}",
    operation_id="GetTrainingJobStatus",
    summary="A training job: status, error, last log lines",
    responses=answers(200),
)
def get_training(job_id: JobId, services: ServicesDep, actor: ActorDep) -> Response:
    return respond(200, "OK", services.trainings.get(actor, job_id))


@router.put(
    "/trainings/{jobId}/stop",
    operation_id="StopTrainingJob",
    summary="Stop a training job that runs",
    responses=answers(200),
)
def stop_training(job_id: JobId, services: ServicesDep, actor: ActorDep) -> Response:
    return respond(200, "Stopping", services.trainings.stop(actor, job_id))


@router.delete(
    "/trainings",
    operation_id="DeleteTrainingJobs",
    status_code=204,
    summary="Stop and delete training jobs with their own files (never the base model or the dataset)",
)
def delete_trainings(body: DeleteTrainings, services: ServicesDep, actor: ActorDep) -> Response:
    services.trainings.delete(actor, body.training_id_list)
    return respond(204, "")
