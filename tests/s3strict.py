"""moto's S3 server with the one rule of real S3 that moto leaves out and the official client
trips on: a request authenticated twice (a presigned URL's query signature and an `Authorization`
header) is refused with S3's own 400. Run as `python -m tests.s3strict -H HOST -p PORT`."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

DOUBLE_AUTH = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidArgument</Code><Message>Only one '
               b"auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string "
               b"parameter or the Authorization header should be specified</Message>"
               b"<ArgumentName>Authorization</ArgumentName></Error>")


def refusing_double_auth(app):
    def strict(environ, start_response):
        query = environ.get("QUERY_STRING", "")
        if environ.get("HTTP_AUTHORIZATION") and ("X-Amz-Signature=" in query or "Signature=" in query):
            start_response("400 Bad Request", [("Content-Type", "application/xml"),
                                               ("Content-Length", str(len(DOUBLE_AUTH)))])
            return [DOUBLE_AUTH]
        return app(environ, start_response)

    return strict


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, refusing_double_auth(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
