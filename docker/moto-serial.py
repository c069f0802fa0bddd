"""moto's DynamoDB-compatible server, answering one request at a time.

DynamoDB applies each request atomically: a conditional write or a TransactWriteItems
either sees the item another request wrote or is refused. moto's own server handles
requests on several threads over shared tables without a lock, so concurrent requests
interleave inside it: two concurrent TransactWriteItems both pass their
`attribute_not_exists` condition, and a Scan running beside writes can serialize an
item half-changed (a map entry whose value is a bare string, which no SDK parses).
The gateway's tests send concurrent requests on purpose, so they saw both.

Connections are still served on threads (keep-alive, slow clients); only the
application, each request's whole answer included, runs under one lock.

    python3 moto-serial.py [-H HOST] [-p PORT]
"""

import argparse
import threading

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple


def serial(app):
    lock = threading.Lock()

    def call(environ, start_response):
        with lock:
            # The body is read out while the lock is held: moto builds it lazily.
            return [b"".join(app(environ, start_response))]

    return call


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=8000)
    args = parser.parse_args()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, serial(app), threaded=True)


if __name__ == "__main__":
    main()
