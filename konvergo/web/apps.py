from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "konvergo.web"
    label = "web"
    verbose_name = "Konvergo web"

    def ready(self) -> None:
        from konvergo import checks  # noqa: F401  (registers the system checks)
