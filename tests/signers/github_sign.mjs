// Signs webhooks the way GitHub does, with Octokit's @octokit/webhooks-methods.
//
// Reads one JSON request per line on stdin, {"secret", "body", "timestamp", "id"}, and
// writes, per request, one line with the JSON object of the headers GitHub attaches:
// the signature, the delivery id and the event name. GitHub signs no timestamp.
// Requests are answered in order, one at a time.

import { createInterface } from "node:readline";
import { sign } from "@octokit/webhooks-methods";

for await (const line of createInterface({ input: process.stdin })) {
  const req = JSON.parse(line);
  const headers = {
    "X-Hub-Signature-256": await sign(req.secret, req.body),
    "X-GitHub-Delivery": req.id,
    "X-GitHub-Event": "pull_request",
  };
  process.stdout.write(JSON.stringify(headers) + "\n");
}
