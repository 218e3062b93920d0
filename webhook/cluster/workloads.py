"""Reads of the object between a pod and its workload: a ReplicaSet (for its Deployment) or a
Job (for its CronJob). `check` and the server's detector resolve owners through this."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

from webhook.cluster.api import ApiError, ApiServer
from webhook.detection.owners import MIDDLE_KINDS


def middle_metadata(
    api: ApiServer, kind: str, namespace: str, name: str, timeout: float
) -> Mapping[str, Any] | None:
    """The ReplicaSet's or Job's metadata; None when it is gone (404) or has none."""
    api_version, resource = MIDDLE_KINDS[kind]
    quote = urllib.parse.quote
    path = (
        f"/apis/{api_version}/namespaces/{quote(namespace, safe='')}/{resource}/"
        f"{quote(name, safe='')}"
    )
    try:
        found = api.get(path, timeout)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
    metadata = found.get("metadata") if isinstance(found, dict) else None
    return metadata if isinstance(metadata, dict) else None
