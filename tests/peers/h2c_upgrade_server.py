"""An HTTP/1.1 server that upgrades to HTTP/2 cleartext (`Upgrade: h2c`,
RFC 7540 §3.2) with python-h2, for the upgrade capture test (nginx and
nghttpd only speak h2c with prior knowledge).

`h2c_upgrade_server.py` prints `listening <port>`. Each connection: an
HTTP/1.1 request; with `Upgrade: h2c` it answers 101 and serves that request
as stream 1 over HTTP/2, then any further streams; without, a plain HTTP/1.1
200. `/status/N` answers N, anything else 200 "ok".
"""

import socket
import threading

import h2.config
import h2.connection
import h2.events


def status_of(path):
    if path.startswith("/status/"):
        try:
            return int(path[len("/status/"):])
        except ValueError:
            return 400
    return 200


def respond(conn, stream_id, path):
    status = status_of(path)
    body = b"ok\n"
    conn.send_headers(
        stream_id,
        [(":status", str(status)), ("content-length", str(len(body))), ("server", "h2c-upgrade")],
    )
    conn.send_data(stream_id, body, end_stream=True)


def read_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def serve(sock):
    with sock:
        head, rest = read_head(sock)
        if head is None:
            return
        lines = head.split("\r\n")
        path = lines[0].split(" ")[1]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("upgrade", "").lower() != "h2c":
            body = b"ok\n"
            sock.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (len(body), body)
            )
            return
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_upgrade_connection(headers.get("http2-settings", ""))
        respond(conn, 1, path)
        sock.sendall(conn.data_to_send())
        paths = {}
        data = rest
        while True:
            if data:
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        paths[event.stream_id] = dict(event.headers).get(b":path", b"/").decode()
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id in paths:
                        respond(conn, event.stream_id, paths.pop(event.stream_id))
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        sock.sendall(conn.data_to_send())
                        return
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
            data = sock.recv(65536)
            if not data:
                return


def main():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    print(f"listening {listener.getsockname()[1]}", flush=True)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=serve, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    main()
