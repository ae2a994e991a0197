// Signs requests the way Shopify does, with `getHmac` from its own library"s test
// helpers (@shopify/shopify-api/test-helpers), which fakes valid webhook requests:
// the base64 HMAC-SHA256 of the raw body in `X-Shopify-Hmac-Sha256`.
//
// Reads one JSON request per line on stdin, {"secret", "body", "timestamp", "id"}, and
// writes, per request, one line with the JSON object of the headers Shopify attaches
// (the event and webhook ids are both `id`; Shopify signs no timestamp).
import { getHmac } from "@shopify/shopify-api/test-helpers";
import { createInterface } from "node:readline";

for await (const line of createInterface({ input: process.stdin })) {
  const req = JSON.parse(line);
  const headers = {
    "X-Shopify-Topic": "orders/create",
    "X-Shopify-Hmac-Sha256": getHmac(req.body, req.secret),
    "X-Shopify-Shop-Domain": "lowkey-test.myshopify.com",
    "X-Shopify-Webhook-Id": req.id,
    "X-Shopify-Event-Id": req.id,
  };
  process.stdout.write(JSON.stringify(headers) + "\n");
}
