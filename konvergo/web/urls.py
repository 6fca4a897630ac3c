"""URL map of the web UI and the API."""

from django.contrib.auth import views as auth_views
from django.urls import path

from konvergo.web.api.urls import api_urls
from konvergo.web.views import (
    apikeys,
    general,
    home,
    inbox,
    incoming,
    my,
    oauth,
    outbox,
    outgoing,
    parameters,
    users,
)

urlpatterns = [
    path("", home.home, name="home"),
    path("login", auth_views.LoginView.as_view(template_name="konvergo/login.html"), name="login"),
    path("logout", auth_views.LogoutView.as_view(), name="logout"),
    path("settings/general", general.general_settings, name="general-settings"),
    path("settings/developer-mode", general.toggle_developer_mode, name="developer-mode"),
    path("settings/users", users.user_list, name="users"),
    path("settings/users/new", users.user_edit, name="user-new"),
    path("settings/users/<int:pk>", users.user_edit, name="user-edit"),
    path("settings/technical/parameters", parameters.parameter_list, name="parameters"),
    path(
        "settings/technical/parameters/<int:pk>", parameters.parameter_edit, name="parameter-edit"
    ),
    path(
        "settings/technical/parameters/<int:pk>/delete",
        parameters.parameter_delete,
        name="parameter-delete",
    ),
    path("settings/outgoing-servers", outgoing.server_list, name="outgoing-servers"),
    path("settings/outgoing-servers/new", outgoing.server_form, name="outgoing-server-new"),
    path("settings/outgoing-servers/<int:pk>", outgoing.server_form, name="outgoing-server"),
    path("settings/outgoing-servers/<int:pk>/test", outgoing.test_connection, name="outgoing-test"),
    path("settings/outgoing-servers/<int:pk>/delete", outgoing.delete, name="outgoing-delete"),
    path("settings/incoming-servers", incoming.server_list, name="incoming-servers"),
    path("settings/incoming-servers/new", incoming.server_form, name="incoming-server-new"),
    path("settings/incoming-servers/<int:pk>", incoming.server_form, name="incoming-server"),
    path(
        "settings/incoming-servers/<int:pk>/confirm",
        incoming.test_and_confirm,
        name="incoming-confirm",
    ),
    path("settings/incoming-servers/<int:pk>/fetch", incoming.fetch_now, name="incoming-fetch"),
    path(
        "settings/incoming-servers/<int:pk>/reset",
        incoming.reset_confirmation,
        name="incoming-reset",
    ),
    path("settings/incoming-servers/<int:pk>/delete", incoming.delete, name="incoming-delete"),
    path(
        "settings/<str:kind>-servers/<int:pk>/consent-link",
        oauth.create_link,
        name="consent-link-create",
    ),
    path(
        "microsoft_outlook/connect/<str:kind>/<int:pk>", oauth.connect_view, name="outlook-connect"
    ),
    path(
        "microsoft_outlook/disconnect/<str:kind>/<int:pk>",
        oauth.disconnect,
        name="outlook-disconnect",
    ),
    path("microsoft_outlook/confirm", oauth.confirm, name="outlook-confirm"),
    path("microsoft_outlook/link/<str:token>", oauth.consent_link, name="consent-link"),
    path("my/servers", my.my_servers, name="my-servers"),
    path("outbox", outbox.outbox_list, name="outbox"),
    path("outbox/<int:pk>/retry", outbox.retry, name="outbox-retry"),
    path("outbox/<int:pk>/cancel", outbox.cancel, name="outbox-cancel"),
    path("inbox", inbox.thread_list, name="inbox"),
    path("inbox/new", inbox.compose, name="compose"),
    path("inbox/<int:pk>", inbox.thread_view, name="thread"),
    path("inbox/attachments/<int:pk>", inbox.attachment, name="attachment"),
    path("account/api-keys", apikeys.key_list, name="api-keys"),
    path("account/api-keys/new", apikeys.key_create, name="api-key-create"),
    path("account/api-keys/<int:pk>/revoke", apikeys.key_revoke, name="api-key-revoke"),
    path("api/v1/", api_urls),
]
