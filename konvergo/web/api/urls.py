"""Import every API module so its routes register, then expose the URLs."""

from konvergo.web.api import messages, system, threads  # noqa: F401
from konvergo.web.api.base import api

api_urls = api.urls
