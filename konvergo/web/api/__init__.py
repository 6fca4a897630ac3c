"""The JSON HTTP API (``/api/v1/``), with its OpenAPI document at ``/api/v1/openapi.json``."""
