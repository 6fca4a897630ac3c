"""WSGI entry point (gunicorn serves ``konvergo.web.wsgi:application``)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "konvergo.conf.settings")
application = get_wsgi_application()
