"""``konvergo``: Django's management commands under Konvergo's settings."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "konvergo.conf.settings")
    from django.core.management import execute_from_command_line

    from konvergo.errors import ConfigurationError

    args = list(sys.argv[1:] if argv is None else argv)
    # Our commands read better with hyphens (`konvergo rotate-keys`); Django's are modules.
    if args and not args[0].startswith("-"):
        args[0] = args[0].replace("-", "_")
    try:
        execute_from_command_line(["konvergo", *args])
    except ConfigurationError as exc:
        sys.stderr.write(f"konvergo: configuration error: {exc}\n")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
