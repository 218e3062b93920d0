"""Everything that talks to the API server: one client, one list+watch informer, the caches.

- `api`: `ApiServer` (GET, watch streams, POST/PUT/PATCH with JSON) and how to reach it
  (`connect`: in-cluster service account, else the kubeconfig).
- `watch`: `Informer`, the one list+watch loop (paged list, relist on 410, bookmarks,
  backoff, a transform that bounds memory, callbacks for consumers that keep counts).
- `live`: single-flight live reads with a short memory, for what a watch has not delivered.
- `namespaces`: Namespace annotations and labels for the settings layer.
- `services`: Services per namespace, for a pod's exposure (the profiles feature).

Nothing here imports fastapi or uvicorn; `kubernetes` only to read a kubeconfig.
"""
