from django.apps import AppConfig


class CliConfig(AppConfig):
    name = "konvergo.cli"
    label = "konvergo_cli"
    verbose_name = "Konvergo command line"
