"""Signs requests the way Twilio does, with the Twilio SDK's own `RequestValidator`.

Twilio signs the full URL it requests, then, for a form body, each POST field sorted
by name (`compute_signature(url, params)`). For a JSON body it puts `bodySHA256` (the
body's hex SHA-256) in the URL's query and signs the URL alone; the URL given here
already carries it then, as it would arrive.

Reads one JSON request per line on stdin, {"secret", "body", "url", "id"}, and writes,
per request, one line with the JSON object of the headers Twilio attaches.
"""

import json
import sys
from urllib.parse import parse_qs, urlparse

from twilio.request_validator import RequestValidator


class Fields(dict):
    """A form's fields, name to the list of its values, read as a Django QueryDict is."""

    def getlist(self, name):
        return self[name]


for line in sys.stdin:
    req = json.loads(line)
    url = req["url"]
    if "bodySHA256" in parse_qs(urlparse(url).query):
        params = {}
    else:
        params = Fields(parse_qs(req["body"], keep_blank_values=True))
    validator = RequestValidator(req["secret"])
    signature = validator.compute_signature(url, params)
    headers = {
        "X-Twilio-Signature": signature,
        "I-Twilio-Idempotency-Token": req["id"],
    }
    print(json.dumps(headers), flush=True)
