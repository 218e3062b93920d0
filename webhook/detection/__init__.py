"""Finding the pods that missed the webhook: the verdict on one live pod (`judge`) and the
workload that owns it (`owners`). Pure: shared by `lifecycle-webhook check` and the server."""
