"""gRPC peers for the capture tests: a grpcio server and scripted clients over
h2c (insecure channels), without generated code (generic handlers, raw bytes).

Server: `grpc_peer.py server` prints `listening <port>` once ready. Service
`demo.Echo`:
  Unary         replies with the request, or `size:N` -> N bytes
  ServerStream  `N` -> N messages
  ClientStream  -> the number of messages received
  Bidi          echoes every message
  Fail          aborts with the status code named by the request
  Slow          sleeps the request's milliseconds, then replies

Client: `grpc_peer.py client PORT SCENARIO` runs a scenario and prints one JSON
line: {"calls": [{"method": "demo.Echo/Unary", "code": "OK"}, ...]}. Scenario
`late N M` makes N calls, prints `ready`, waits for a line on stdin, then makes
M more calls on the same channel.
"""

import json
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "demo.Echo"


def ident(b):
    return b


def unary(request, context):
    if request.startswith(b"size:"):
        return b"x" * int(request[5:])
    return request


def server_stream(request, context):
    for i in range(int(request or b"1")):
        yield b"message %d" % i


def client_stream(requests, context):
    return str(sum(1 for _ in requests)).encode()


def bidi(requests, context):
    for r in requests:
        yield r


def fail(request, context):
    context.abort(getattr(grpc.StatusCode, request.decode()), "asked to fail")


def slow(request, context):
    time.sleep(int(request) / 1000)
    return b"late"


def serve():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, ident, ident),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, ident, ident),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi, ident, ident),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, ident, ident),
        "Slow": grpc.unary_unary_rpc_method_handler(slow, ident, ident),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening {port}", flush=True)
    server.wait_for_termination()


class Client:
    def __init__(self, port):
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{port}",
            options=[("grpc.max_receive_message_length", 8 << 20)],
        )
        self.calls = []

    def call(self, kind, method, request, timeout=10):
        path = f"/{SERVICE}/{method}"
        make = {
            "uu": self.channel.unary_unary,
            "us": self.channel.unary_stream,
            "su": self.channel.stream_unary,
            "ss": self.channel.stream_stream,
        }[kind]
        stub = make(path, request_serializer=ident, response_deserializer=ident)
        code = "OK"
        try:
            result = stub(request, timeout=timeout)
            if kind in ("us", "ss"):
                result = list(result)
        except grpc.RpcError as e:
            code = e.code().name
        self.calls.append({"method": f"{SERVICE}/{method}", "code": code})

    def mix(self):
        for i in range(3):
            self.call("uu", "Unary", b"hello %d" % i)
        self.call("us", "ServerStream", b"3")
        self.call("su", "ClientStream", iter([b"a", b"b", b"c", b"d"]))
        self.call("ss", "Bidi", iter([b"1", b"2", b"3", b"4", b"5"]))
        self.call("uu", "Fail", b"NOT_FOUND")
        self.call("uu", "Fail", b"INTERNAL")
        self.call("uu", "Slow", b"600", timeout=0.2)

    def big(self):
        for size in (64 << 10, 1 << 20):
            self.call("uu", "Unary", b"size:%d" % size)
            self.call("uu", "Unary", b"y" * size)
        for i in range(3):
            self.call("uu", "Unary", b"small %d" % i)

    def concurrent(self, n=40):
        lock = threading.Lock()
        stub = self.channel.unary_unary(
            f"/{SERVICE}/Unary", request_serializer=ident, response_deserializer=ident
        )
        pending = [stub.future(b"c %d" % i, timeout=10) for i in range(n)]
        for f in pending:
            code = "OK"
            try:
                f.result()
            except grpc.RpcError as e:
                code = e.code().name
            with lock:
                self.calls.append({"method": f"{SERVICE}/Unary", "code": code})


def main():
    if sys.argv[1] == "server":
        serve()
        return
    client = Client(int(sys.argv[2]))
    scenario = sys.argv[3]
    if scenario == "late":
        before, after = int(sys.argv[4]), int(sys.argv[5])
        for i in range(before):
            client.call("uu", "Unary", b"before %d" % i)
        client.calls.clear()
        print("ready", flush=True)
        sys.stdin.readline()
        for i in range(after):
            client.call("uu", "Unary", b"after %d" % i)
    else:
        getattr(client, scenario)()
    print(json.dumps({"calls": client.calls}), flush=True)


if __name__ == "__main__":
    main()
