"""Signs requests the way Slack does, with the Slack SDK's own signature module.

Slack carries the event id in the body (`event_id`), so `id` is not used here.

Reads one JSON request per line on stdin, {"secret", "body", "timestamp", "id"}, and
writes, per request, one line with the JSON object of the headers Slack attaches.
"""

import json
import sys

from slack_sdk.signature import SignatureVerifier

for line in sys.stdin:
    req = json.loads(line)
    timestamp = str(req["timestamp"])
    signature = SignatureVerifier(req["secret"]).generate_signature(
        timestamp=timestamp, body=req["body"]
    )
    headers = {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature}
    print(json.dumps(headers), flush=True)
