"""Inference routes: create a job, start it, read it (optionally waiting), list, delete."""

from typing import Annotated

from fastapi import APIRouter, Query, Response

from middleware_api.models.inferences import CreateInference, DeleteInferences
from middleware_api.models.responses import answers, paged
from middleware_api.routes.deps import ActorDep, PageDep, ServicesDep
from middleware_api.routes.envelope import respond
from middleware_api.services.inferences import MAX_WAIT_S

router = APIRouter(tags=["inferences"])
MESSAGES = {200: "OK", 201: "Created", 202: "Accepted"}


@router.post(
    "/inferences",
    operation_id="CreateInferenceJob",
    summary="Create a job (201); with payload_string also start it (202 async, 200 real-time)",
    status_code=201,
    responses=answers(201, 202, 200),
)
def create_inference(body: CreateInference, services: ServicesDep, actor: ActorDep) -> Response:
    inference, status = services.inferences.create(
        actor,
        inference_type=body.inference_type,
        task_type=body.task_type,
        models=body.models,
        endpoint_name=body.endpoint_name,
        payload_string=body.payload_string,
    )
    return respond(status, MESSAGES[status], {"inference": inference})


@router.put(
    "/inferences/{jobId}/start",
    operation_id="StartInferenceJob",
    summary="Start a job once: 202 async, 200 real-time (with the result)",
    responses=answers(200, 202),
)
def start_inference(jobId: str, services: ServicesDep, actor: ActorDep) -> Response:  # noqa: N803
    inference, status = services.inferences.start(actor, jobId)
    return respond(status, MESSAGES[status], {"inference": inference})


@router.get(
    "/inferences/{jobId}",
    operation_id="GetInferenceJob",
    summary="A job, with its images' URLs",
    responses=answers(200),
)
def get_inference(
    jobId: str,  # noqa: N803
    services: ServicesDep,
    actor: ActorDep,
    wait_s: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description="wait up to this long for the job to end")] = 0,
) -> Response:
    return respond(200, "OK", services.inferences.get(actor, jobId, wait_s))


@router.get(
    "/inferences",
    operation_id="ListInferenceJobs",
    summary="List the acting user's jobs",
    responses=answers(200, model=paged("inferences")),
)
def list_inferences(
    services: ServicesDep,
    actor: ActorDep,
    page: PageDep,
    status: Annotated[list[str] | None, Query(description="only these statuses")] = None,
    task_type: Annotated[list[str] | None, Query(description="only these task types")] = None,
) -> Response:
    result = services.inferences.list(actor, page.limit, page.cursor, status or [], task_type or [])
    return respond(200, "OK", {"inferences": result.items, "last_evaluated_key": result.cursor})


@router.delete(
    "/inferences", operation_id="DeleteInferenceJobs", status_code=204, summary="Delete jobs and their files"
)
def delete_inferences(body: DeleteInferences, services: ServicesDep, actor: ActorDep) -> Response:
    services.inferences.delete(actor, body.inference_id_list)
    return respond(204, "")
