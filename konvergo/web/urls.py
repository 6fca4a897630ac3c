"""URL map of the web UI and the API."""

from django.contrib.auth import views as auth_views
from django.urls import path

from konvergo.web.api.urls import api_urls
from konvergo.web.views import general, home, parameters, users

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
    path("settings/technical/parameters/<int:pk>", parameters.parameter_edit, name="parameter-edit"),
    path(
        "settings/technical/parameters/<int:pk>/delete",
        parameters.parameter_delete,
        name="parameter-delete",
    ),
    path("api/v1/", api_urls),
]
