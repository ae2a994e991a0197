"""Signs webhooks the way a Standard Webhooks sender does, with the spec's own Python library.

Reads one JSON request per line on stdin, {"secret", "body", "timestamp", "id"}, and
writes, per request, one line with the JSON object of the headers the sender attaches.
Stays up until stdin closes, so a test run pays for one interpreter, not one per request.
"""

import json
import sys
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook

for line in sys.stdin:
    req = json.loads(line)
    signature = Webhook(req["secret"]).sign(
        msg_id=req["id"],
        timestamp=datetime.fromtimestamp(req["timestamp"], tz=timezone.utc),
        data=req["body"],
    )
    headers = {
        "webhook-id": req["id"],
        "webhook-timestamp": str(req["timestamp"]),
        "webhook-signature": signature,
    }
    print(json.dumps(headers), flush=True)
