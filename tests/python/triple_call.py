#!/usr/bin/env python3
"""Unary calls with Apache Dubbo's own Python Triple client (`apache-dubbo`).

    triple_call.py <port> <service> <count>

Calls `<service>/Unary` on 127.0.0.1:<port> `count` times, one after the
other on one connection, sending the `test.Echo` message ("hi", 3), and
prints one JSON line per call: the gRPC status name and its description
(`OK` with the echoed message when the call succeeds).

Triple speaks gRPC's wire format; this client did not raise at all on the
gateway's malformed trailers-only answers (the call waited for ever), which
is why the integration tests run it under a timeout.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dubbo  # noqa: E402
from dubbo.configs import ReferenceConfig  # noqa: E402

import grpc_echo  # noqa: E402


def main(port, service, count):
    ref = ReferenceConfig(protocol="tri", service=service, host="127.0.0.1", port=port)
    call = dubbo.Client(ref).unary(
        "Unary", lambda m: grpc_echo.encode(*m), grpc_echo.decode
    )
    for _ in range(count):
        try:
            reply = call(("hi", 3))
            result = {"code": "OK", "details": "", "message": list(reply)}
        except Exception as e:  # the client raises StatusRpcError
            status = getattr(e, "status", None)
            code = getattr(getattr(status, "code", None), "name", type(e).__name__)
            details = getattr(status, "description", None) or str(e)
            result = {"code": code, "details": details}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
