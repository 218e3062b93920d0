"""The yardstick of SPEC section 7: the cheapest honest FastAPI webhook.

It reads the body with orjson, echoes the uid and returns one fixed patch; no validation,
no mutation logic, no logging, no metrics. Served exactly like the product (uvicorn,
uvloop, httptools, the same certificate, the same keep-alive), so the ratio between the two
is what the product's own work costs.
"""

from __future__ import annotations

import argparse
import base64

import orjson
from fastapi import FastAPI, Request, Response

FIXED_PATCH = base64.b64encode(
    orjson.dumps(
        [
            {
                "op": "add",
                "path": "/spec/containers/0/lifecycle",
                "value": {"preStop": {"sleep": {"seconds": 5}}},
            }
        ]
    )
).decode("ascii")
KEEP_ALIVE_SECONDS = 120
"""Same as the product's, so neither server closes a connection the other would keep."""

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.post("/mutate")
async def mutate(request: Request) -> Response:
    review = orjson.loads(await request.body())
    answer = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": review["request"]["uid"],
            "allowed": True,
            "patchType": "JSONPatch",
            "patch": FIXED_PATCH,
        },
    }
    return Response(orjson.dumps(answer), media_type="application/json")


@app.get("/readyz")
async def readyz() -> Response:
    return Response(b'{"ready":true}', media_type="application/json")


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.baseline_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-cert", required=True)
    parser.add_argument("--tls-key", required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
    )


if __name__ == "__main__":
    main()
