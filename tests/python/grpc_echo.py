#!/usr/bin/env python3
"""`test.Echo` with grpc-core (Python `grpcio`): a client and an upstream that
this project did not write.

tonic accepts answers that grpc-core clients (Python, C++, Ruby, PHP, C#)
reject, so the integration tests drive the gateway with this script too.

    grpc_echo.py serve
        Serves `test.Echo` on an ephemeral loopback port, prints `PORT <n>`,
        then `CALL <method> <seconds left of its deadline, or ->` for every
        call it takes.
        Unary echoes; ServerStream sends `n` messages; ClientStream joins what
        it got; Bidi echoes upper-cased. A message text `sleep:<ms>` sleeps
        first; `fail:<code>:<after>` ends the call with status `code` (after
        `after` messages, for ServerStream);
        `stall:<after>:<ms>` (ServerStream) sends `after` messages, then
        waits `ms` before it ends the call.

    grpc_echo.py call <host:port> <calls.json>
        Makes the calls in order on one channel (a list of objects with
        `method`, `text`, `n`, `messages` ([[text, n], ...]), `timeout`
        (seconds), `metadata` ([[k, v], ...]) and `parallel` (run that many
        copies at once)) and prints one JSON line per call: code, details,
        initial and trailing metadata, the messages received.

The message `Msg { string text = 1; uint32 n = 2; }` is encoded by hand, so
no protoc is needed.
"""

import json
import sys
import threading
import time
from concurrent import futures

import grpc


def _varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode(text, n):
    raw = text.encode()
    out = b""
    if raw:
        out += b"\x0a" + _varint(len(raw)) + raw
    if n:
        out += b"\x10" + _varint(n)
    return out


def decode(data):
    text, n, i = "", 0, 0
    while i < len(data):
        tag = data[i]
        i += 1
        value, shift = 0, 0
        while True:
            b = data[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        if tag == 0x0A:
            text = data[i : i + value].decode()
            i += value
        elif tag == 0x10:
            n = value
        else:
            raise ValueError("unexpected field tag %d" % tag)
    return text, n


def ident(b):
    return b


# ---------------------------------------------------------------- upstream

_print_lock = threading.Lock()


def _say(line):
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _enter(method, context):
    remaining = context.time_remaining()
    _say("CALL %s %s" % (method, "-" if remaining is None else "%.3f" % remaining))


def _directives(text, context):
    """Sleeps for `sleep:<ms>`; returns (code, after) for `fail:<code>:<after>`."""
    if text.startswith("sleep:"):
        time.sleep(int(text.split(":")[1]) / 1000.0)
    if text.startswith("fail:"):
        _, code, after = text.split(":")
        return grpc.StatusCode[code], int(after)
    return None


def _stall(text):
    """(after, seconds) for `stall:<after>:<ms>`."""
    if text.startswith("stall:"):
        _, after, ms = text.split(":")
        return int(after), int(ms) / 1000.0
    return None


def _unary(request, context):
    _enter("Unary", context)
    text, n = decode(request)
    fail = _directives(text, context)
    if fail:
        context.abort(fail[0], "failed as told")
    return encode(text, n)


def _server_stream(request, context):
    _enter("ServerStream", context)
    text, n = decode(request)
    fail = _directives(text, context)
    stall = _stall(text)
    count = fail[1] if fail else stall[0] if stall else n
    for i in range(count):
        yield encode(text, i)
    if stall:
        time.sleep(stall[1])
    if fail:
        context.abort(fail[0], "failed after %d messages" % fail[1])


def _client_stream(requests, context):
    _enter("ClientStream", context)
    joined, count = "", 0
    for raw in requests:
        text, _ = decode(raw)
        fail = _directives(text, context)
        if fail:
            context.abort(fail[0], "failed after %d messages" % count)
        joined += text
        count += 1
    return encode(joined, count)


def _bidi(requests, context):
    _enter("Bidi", context)
    for raw in requests:
        text, n = decode(raw)
        fail = _directives(text, context)
        if fail:
            context.abort(fail[0], "failed after %d messages" % n)
        yield encode(text.upper(), n)


def serve():
    handler = grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary, ident, ident),
            "ServerStream": grpc.unary_stream_rpc_method_handler(
                _server_stream, ident, ident
            ),
            "ClientStream": grpc.stream_unary_rpc_method_handler(
                _client_stream, ident, ident
            ),
            "Bidi": grpc.stream_stream_rpc_method_handler(_bidi, ident, ident),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    server.add_generic_rpc_handlers((handler,))
    health = _health(server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    _say("PORT %d" % port)
    # Serve until the test closes our stdin (or kills us); a line
    # `HEALTH <service|-> <SERVING|NOT_SERVING>` sets a health status.
    for line in sys.stdin:
        words = line.split()
        if len(words) == 3 and words[0] == "HEALTH" and health is not None:
            service = "" if words[1] == "-" else words[1]
            health.set(service, _health_status(words[2]))
            _say("HEALTH-SET %s %s" % (words[1], words[2]))
    server.stop(0)


def _health(server):
    """grpc.health.v1.Health from grpcio-health-checking (gRPC's own
    implementation), every service SERVING; None when the package is
    missing (only the health-check tests need it)."""
    try:
        from grpc_health.v1 import health, health_pb2_grpc
    except ImportError:
        return None
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for service in ("", "test.Echo"):
        servicer.set(service, _health_status("SERVING"))
    return servicer


def _health_status(name):
    from grpc_health.v1 import health_pb2

    return getattr(health_pb2.HealthCheckResponse, name)


# ------------------------------------------------------------------ client


def _metadata(md):
    return {k: (v if isinstance(v, str) else v.hex()) for k, v in (md or ())}


def _one_call(channel, call):
    method = call.get("method", "Unary")
    path = "/test.Echo/" + method
    timeout = call.get("timeout", 10.0)
    metadata = [tuple(kv) for kv in call.get("metadata", [])]
    text, n = call.get("text", ""), call.get("n", 0)
    messages = [encode(t, k) for t, k in call.get("messages", [[text, n]])]
    received = []
    started = time.monotonic()
    result = {"method": method}
    try:
        if method == "Unary":
            fn = channel.unary_unary(path, ident, ident)
            resp, c = fn.with_call(encode(text, n), timeout=timeout, metadata=metadata)
            received.append(decode(resp))
        elif method == "ClientStream":
            fn = channel.stream_unary(path, ident, ident)
            resp, c = fn.with_call(iter(messages), timeout=timeout, metadata=metadata)
            received.append(decode(resp))
        else:
            if method == "ServerStream":
                fn = channel.unary_stream(path, ident, ident)
                c = fn(encode(text, n), timeout=timeout, metadata=metadata)
            else:
                fn = channel.stream_stream(path, ident, ident)
                c = fn(iter(messages), timeout=timeout, metadata=metadata)
            for raw in c:
                received.append(decode(raw))
        result.update(
            code=c.code().name,
            details=c.details() or "",
            initial=_metadata(c.initial_metadata()),
            trailing=_metadata(c.trailing_metadata()),
        )
    except grpc.RpcError as e:
        result.update(
            code=e.code().name,
            details=e.details() or "",
            initial=_metadata(e.initial_metadata()),
            trailing=_metadata(e.trailing_metadata()),
        )
    result["messages"] = [[t, k] for t, k in received]
    result["elapsed"] = time.monotonic() - started
    return result


def call(target, script_path):
    with open(script_path) as f:
        calls = json.load(f)
    # One channel for every call: a refusal must not wedge the connection.
    with grpc.insecure_channel(target) as channel:
        for c in calls:
            copies = c.get("parallel", 1)
            if copies == 1:
                _say(json.dumps(_one_call(channel, c)))
                continue
            with futures.ThreadPoolExecutor(max_workers=copies) as pool:
                for r in pool.map(lambda _: _one_call(channel, c), range(copies)):
                    _say(json.dumps(r))


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve()
    elif sys.argv[1:2] == ["call"] and len(sys.argv) == 4:
        call(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
