"""SANDBOX ONLY: a local stand-in for Microsoft 365, for tests and for trying Konvergo.

Nothing here is used by the product unless an administrator points
``microsoft_outlook.endpoint`` and the server hosts at it. See ``konvergo sandbox``.
"""
