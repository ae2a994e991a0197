"""Signs webhooks the way Stripe does, with Stripe's Python library.

`stripe.WebhookSignature.generate_signature_header` is the library's helper "for signing
payloads in unit tests": the same `t=...,v1=...` header its `verify_header` checks.
Stripe carries the event id in the body, so `id` is not used here.

Reads one JSON request per line on stdin, {"secret", "body", "timestamp", "id"}, and
writes, per request, one line with the JSON object of the headers Stripe attaches.
"""

import json
import sys

import stripe

for line in sys.stdin:
    req = json.loads(line)
    header = stripe.WebhookSignature.generate_signature_header(
        req["body"], req["secret"], timestamp=req["timestamp"]
    )
    print(json.dumps({"Stripe-Signature": header}), flush=True)
