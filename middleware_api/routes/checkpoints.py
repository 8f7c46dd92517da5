"""Checkpoints routes: create (upload or download), complete or rename, list, get, delete."""

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from middleware_api.models.checkpoints import CreateCheckpoint, DeleteCheckpoints, UpdateCheckpoint
from middleware_api.models.responses import ErrorBody, answers, paged
from middleware_api.routes.deps import ActorDep, PageDep, ServicesDep
from middleware_api.routes.envelope import respond

router = APIRouter(tags=["checkpoints"])

CheckpointId = Annotated[str, Path(alias="checkpointId", description="the checkpoint's id")]


@router.get(
    "/checkpoints",
    operation_id="ListCheckpoints",
    summary="List the checkpoints the acting user may see",
    responses=answers(200, model=paged("checkpoints")),
)
def list_checkpoints(
    services: ServicesDep,
    actor: ActorDep,
    page: PageDep,
    status: Annotated[list[str] | None, Query(description="only these statuses (repeat or comma-separate)")] = None,
    types: Annotated[list[str] | None, Query(description="only these types (repeat or comma-separate)")] = None,
    checkpoint_type: Annotated[list[str] | None, Query(description="the same as `types`")] = None,
) -> Response:
    result = services.checkpoints.list(
        actor,
        statuses=_split(status),
        types=_split(types) + _split(checkpoint_type),
        limit=page.limit,
        cursor=page.cursor,
    )
    return respond(200, "OK", {"checkpoints": result.items, "last_evaluated_key": result.cursor})


@router.get(
    "/checkpoints/{checkpointId}", operation_id="GetCheckpoint", summary="Get one checkpoint", responses=answers(200)
)
def get_checkpoint(checkpoint_id: CheckpointId, services: ServicesDep, actor: ActorDep) -> Response:
    return respond(200, "OK", {"checkpoint": services.checkpoints.get(actor, checkpoint_id)})


@router.post(
    "/checkpoints",
    operation_id="CreateCheckpoint",
    summary="Create a checkpoint: from URLs (downloaded by the server, 202) or by multipart upload (201)",
    status_code=201,
    responses={
        **answers(201, 202),
        503: {"model": ErrorBody, "description": "the download could not be queued: retry later"},
    },
)
def create_checkpoint(body: CreateCheckpoint, services: ServicesDep, actor: ActorDep) -> Response:
    files = None if body.filenames is None else [(file.filename, file.parts_number) for file in body.filenames]
    created = services.checkpoints.create(actor, body.checkpoint_type, body.params.message, urls=body.urls, files=files)
    if created.presigned_urls is None:
        return respond(202, "Checkpoint creation in progress, please check later", {"checkpoint": created.checkpoint})
    return respond(
        201, "Checkpoint created", {"checkpoint": created.checkpoint, "s3PresignUrl": created.presigned_urls}
    )


@router.put(
    "/checkpoints/{checkpointId}",
    operation_id="UpdateCheckpoint",
    summary="Complete a multipart upload (status Active + multi_parts_tags) or rename a one-file checkpoint (name)",
    responses=answers(200),
)
def update_checkpoint(
    checkpoint_id: CheckpointId, body: UpdateCheckpoint, services: ServicesDep, actor: ActorDep
) -> Response:
    tags = None
    if body.multi_parts_tags is not None:
        tags = {name: [part.model_dump() for part in parts] for name, parts in body.multi_parts_tags.items()}
    checkpoint = services.checkpoints.update(
        actor, checkpoint_id, status=body.status, multi_parts_tags=tags, name=body.name
    )
    # under data.checkpoint as every other route, and at the top level as the API page shows
    return respond(200, "Updated", {"checkpoint": checkpoint}, checkpoint=checkpoint)


@router.delete("/checkpoints", operation_id="DeleteCheckpoints", status_code=204, summary="Delete checkpoints")
def delete_checkpoints(body: DeleteCheckpoints, services: ServicesDep, actor: ActorDep) -> Response:
    services.checkpoints.delete(actor, body.checkpoint_id_list)
    return respond(204, "")


def _split(values: list[str] | None) -> list[str]:
    """Repeated query values, each possibly comma-separated (`?types=Lora,VAE`)."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]
