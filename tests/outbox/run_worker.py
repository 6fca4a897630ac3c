"""A worker process with a tighter policy: ``python -m tests.outbox.run_worker MAX_THREADS``.

Same loop as ``konvergo worker``; only ``POLICY.max_threads`` differs, so that a test can make
two workers share a server's session slots.
"""

from __future__ import annotations

import os
import sys

import django

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "konvergo.conf.settings")
    django.setup()
    from konvergo.services import worker
    from konvergo.services.outbox_limits import POLICY

    POLICY.max_threads = int(sys.argv[1])
    worker.run_forever(idle_sleep=0.1)
