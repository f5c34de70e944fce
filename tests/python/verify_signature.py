"""Verifies one botlinkd webhook delivery with the off-the-shelf `standardwebhooks` package.

Reads {"secret": "whsec_…", "headers": {...}, "body": "…"} on stdin; prints the verified
event type and exits 0, or prints the error and exits 1.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook


def main() -> int:
    request = json.load(sys.stdin)
    try:
        event = Webhook(request["secret"]).verify(request["body"], request["headers"])
    except Exception as error:  # the library raises its own WebhookVerificationError
        print(f"not verified: {error}")
        return 1
    print(f"verified {event['event']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
