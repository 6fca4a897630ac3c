"""Sandbox fixtures: the identity platform's and the mail servers' live in their own modules."""

from tests.sandbox.fixtures_idp import *  # noqa: F403
from tests.sandbox.fixtures_mail import *  # noqa: F403
