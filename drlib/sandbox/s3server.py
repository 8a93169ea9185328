"""An S3-compatible HTTP endpoint for the sandbox (moto's server, with its request log quieted).

Run as ``python -m drlib.sandbox.s3server --port N``. boto3 talks to it over real HTTP.

moto asks every write into a bucket with a default object-lock retention for a ``Content-MD5`` or
``x-amz-sdk-checksum-algorithm`` header, server-side copies included; S3 asks it of uploads, which carry a
body to check, not of ``CopyObject``. The endpoint adds the header to copies so that backups copied server
side into the sandbox's locked backups bucket behave as they do on S3.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.serving import make_server

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def copies_into_locked_buckets(app: WsgiApp) -> WsgiApp:
    """``app``, with a checksum-algorithm header on every server-side copy that has none (see above)."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        is_copy = environ.get("REQUEST_METHOD") == "PUT" and "HTTP_X_AMZ_COPY_SOURCE" in environ
        if is_copy and not ({"HTTP_CONTENT_MD5", "HTTP_X_AMZ_SDK_CHECKSUM_ALGORITHM"} & environ.keys()):
            environ["HTTP_X_AMZ_SDK_CHECKSUM_ALGORITHM"] = "CRC32"
        return app(environ, start_response)

    return wrapped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )

    app = copies_into_locked_buckets(DomainDispatcherApplication(create_backend_app))
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    print(f"S3-compatible endpoint on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
