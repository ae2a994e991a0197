"""Signs webhooks for lowkey's generic `hmac-sha256` scheme with Python's standard library,
as a sender following no published scheme would: an HMAC-SHA256 of the body, base64, in
`X-Body-Signature` after a `v1=` prefix (the test sources are configured that way), and
the delivery id in `Idempotency-Key`. `timestamp` is not signed by this scheme.

Reads one JSON request per line on stdin, {"secret", "body", "timestamp", "id"}, and
writes, per request, one line with the JSON object of the headers the sender attaches.
"""

import base64
import hashlib
import hmac
import json
import sys

for line in sys.stdin:
    req = json.loads(line)
    digest = hmac.new(
        req["secret"].encode(), req["body"].encode(), hashlib.sha256
    ).digest()
    headers = {
        "X-Body-Signature": "v1=" + base64.b64encode(digest).decode(),
        "Idempotency-Key": req["id"],
    }
    print(json.dumps(headers), flush=True)
