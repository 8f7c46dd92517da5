"""Every table of the middleware: names, keys and indexes, shared by both backends.

`LISTING` is the constant partition value of the `by_created` indexes, so a
list route is one index query in creation order, never a scan. Every index
sorts on `created`, an epoch number; the API's own time strings are kept beside it.
"""

from __future__ import annotations

from middleware_api.ports.tables import Index, TableSpec

LISTING = "all"

USERS = TableSpec(
    # users, roles and personal tokens: kind is "user", "role" or "token"
    name="users",
    partition="kind",
    sort="sort_key",
    indexes=(Index("by_owner", partition="token_owner", sort="created"),),
)

CHECKPOINTS = TableSpec(
    name="checkpoints",
    partition="id",
    indexes=(
        Index("by_created", partition="listing", sort="created"),
        Index("by_name", partition="name_key", sort="created"),
        Index("by_status", partition="checkpoint_status", sort="created"),  # lists of one status
    ),
)

ENDPOINTS = TableSpec(
    name="endpoints",
    partition="EndpointDeploymentJobId",
    indexes=(
        Index("by_created", partition="listing", sort="created"),
        Index("by_name", partition="endpoint_name", sort="created"),
    ),
)

INFERENCES = TableSpec(
    # a job is visible to its creator only (its `owner_group_or_role` is [creator]): `by_creator` lists
    # one user's jobs without reading anyone else's
    name="inferences",
    partition="InferenceJobId",
    indexes=(
        Index("by_created", partition="listing", sort="created"),
        Index("by_creator", partition="creator", sort="created"),
    ),
)

TRAININGS = TableSpec(
    name="trainings",
    partition="id",
    indexes=(Index("by_created", partition="listing", sort="created"),),
)

DATASETS = TableSpec(
    name="datasets",
    partition="dataset_name",
    indexes=(Index("by_created", partition="listing", sort="created"),),
)

DATASET_ITEMS = TableSpec(name="dataset_items", partition="dataset_name", sort="sort_key")

ALL_TABLES = (USERS, CHECKPOINTS, ENDPOINTS, INFERENCES, TRAININGS, DATASETS, DATASET_ITEMS)
