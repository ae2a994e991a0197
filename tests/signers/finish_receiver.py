"""Receives lowkey's onFinish POSTs and checks them with the Standard Webhooks library.

Usage: finish_receiver.py OUT SECRET [--fail N] [--tls CERT KEY]

Listens on a free loopback port and prints it on a line of its own. For each POST it
appends one JSON line to OUT: {"verified", "headers", "body", "status"}, where
`verified` says whether `Webhook(SECRET).verify(body, headers)` accepted it. The first
N requests are answered 503 (to make lowkey try again), the rest 204. With --tls it
serves HTTPS with that certificate and key. It runs until it is killed.
"""

import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook

out, secret, *rest = sys.argv[1:]
fail = 0
tls = None
while rest:
    flag = rest.pop(0)
    if flag == "--fail":
        fail = int(rest.pop(0))
    elif flag == "--tls":
        tls = (rest.pop(0), rest.pop(0))
    else:
        sys.exit(f"unknown argument {flag}")
seen = 0


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global seen
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            Webhook(secret).verify(body, headers)
            verified = True
        except Exception as e:  # the library's WebhookVerificationError, or a bad header
            verified = str(e) or type(e).__name__
        seen += 1
        status = 503 if seen <= fail else 204
        with open(out, "a") as f:
            f.write(
                json.dumps(
                    {
                        "verified": verified,
                        "headers": headers,
                        "body": body.decode(),
                        "status": status,
                    }
                )
                + "\n"
            )
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Handler)
if tls:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls)
    server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
