"""The ``konvergo`` command and its management commands."""
