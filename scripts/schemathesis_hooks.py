"""Schemathesis hooks for openapi.yaml (loaded by the contract tests, see README).

Schemathesis has no serializer for NDJSON: this one writes a generated array as one JSON
value per line, and anything else (one reading, or invalid data) as a single line.
"""

import json

import schemathesis

NDJSON = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")


@schemathesis.serializer(*NDJSON)
def ndjson(ctx, value):
    values = value if isinstance(value, list) else [value]
    return "".join(json.dumps(v) + "\n" for v in values).encode()


@schemathesis.deserializer("text/csv")
def csv_text(ctx, response):
    """CSV answers are checked as text, against the pattern openapi.yaml gives for them."""
    return response.content.decode("utf-8")
