"""Datasets routes: create (with upload URLs), enable, list, get, delete."""

from typing import Annotated

from fastapi import APIRouter, Path, Response

from middleware_api.models.datasets import CreateDataset, DeleteDatasets, UpdateDataset
from middleware_api.models.responses import answers, paged
from middleware_api.routes.deps import ActorDep, PageDep, ServicesDep
from middleware_api.routes.envelope import respond

router = APIRouter(tags=["datasets"])

DatasetName = Annotated[str, Path(alias="datasetName", description="the dataset's name")]


@router.post(
    "/datasets",
    operation_id="CreateDataset",
    status_code=201,
    summary="Create a dataset: one presigned PUT URL per file, then PUT /datasets/{name} to enable it",
    responses=answers(201),
)
def create_dataset(body: CreateDataset, services: ServicesDep, actor: ActorDep) -> Response:
    description = body.description if body.description is not None else (body.params and body.params.description)
    created = services.datasets.create(
        actor,
        body.dataset_name,
        [file.model_dump() for file in body.content],
        prefix=body.prefix,
        description=description,
    )
    return respond(201, "Dataset created", created)


@router.put(
    "/datasets/{datasetName}",
    operation_id="UpdateDataset",
    summary="Enable a dataset once every file is uploaded (or disable it)",
    responses=answers(200),
)
def update_dataset(dataset_name: DatasetName, body: UpdateDataset, services: ServicesDep, actor: ActorDep) -> Response:
    return respond(200, "Updated", services.datasets.update(actor, dataset_name, body.status))


@router.get(
    "/datasets",
    operation_id="ListDatasets",
    summary="List the datasets the acting user may see",
    responses=answers(200, model=paged("datasets")),
)
def list_datasets(services: ServicesDep, actor: ActorDep, page: PageDep) -> Response:
    result = services.datasets.list(actor, page.limit, page.cursor)
    return respond(200, "OK", {"datasets": result.items, "last_evaluated_key": result.cursor})


@router.get(
    "/datasets/{datasetName}",
    operation_id="GetDataset",
    summary="A dataset with its files' preview URLs",
    responses=answers(200),
)
def get_dataset(dataset_name: DatasetName, services: ServicesDep, actor: ActorDep) -> Response:
    return respond(200, "OK", services.datasets.get(actor, dataset_name))


@router.delete("/datasets", operation_id="DeleteDatasets", status_code=204, summary="Delete datasets and their files")
def delete_datasets(body: DeleteDatasets, services: ServicesDep, actor: ActorDep) -> Response:
    services.datasets.delete(actor, body.dataset_name_list)
    return respond(204, "")
