"""HTTP/1.1 test server for the end-to-end tests (a real peer, not a mock).

Threaded, keep-alive. Routes:
  /status/<code>      empty response with that status
  /users/<id>         small JSON body
  /big                1 MiB body with Content-Length
  /chunked            chunked body in 3 chunks
  /slow/<ms>          waits, then 200
  /upload (POST)      reads the body, answers its size
  /downstream?port=P  calls http://127.0.0.1:P/users/7 from the serving thread, then 200
  /resolve?name=N     getaddrinfo(N) from the serving thread, answers the addresses
Prints "listening <port>" once ready.
"""
import http.client
import http.server
import socket
import sys
import time
import urllib.parse


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_body(self, code, body, content_type="text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if parts[0] == "status":
            self.send_body(int(parts[1]), b"")
        elif parts[0] == "users":
            self.send_body(200, b'{"id": "%s"}' % parts[1].encode(), "application/json")
        elif parts[0] == "big":
            self.send_body(200, bytes(i % 251 for i in range(1 << 20)), "application/octet-stream")
        elif parts[0] == "chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in (b"first,", b"second,", b"third"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        elif parts[0] == "slow":
            time.sleep(int(parts[1]) / 1000)
            self.send_body(200, b"slow")
        elif parts[0] == "resolve":
            name = urllib.parse.parse_qs(url.query)["name"][0]
            try:
                addrs = sorted({info[4][0] for info in socket.getaddrinfo(name, 80, proto=socket.IPPROTO_TCP)})
            except socket.gaierror as e:
                addrs = [str(e)]
            self.send_body(200, ",".join(addrs).encode())
        elif parts[0] == "downstream":
            port = int(urllib.parse.parse_qs(url.query)["port"][0])
            conn = http.client.HTTPConnection("127.0.0.1", port)
            conn.request("GET", "/users/7")
            conn.getresponse().read()
            conn.close()
            self.send_body(200, b"called downstream")
        else:
            self.send_body(404, b"not found")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        remaining = length
        while remaining:
            remaining -= len(self.rfile.read(min(remaining, 65536)))
        self.send_body(200, str(length).encode())


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), Handler)
    print("listening", server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
