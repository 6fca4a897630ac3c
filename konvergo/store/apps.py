from django.apps import AppConfig


class StoreConfig(AppConfig):
    name = "konvergo.store"
    label = "store"
    verbose_name = "Konvergo store"
    default_auto_field = "django.db.models.BigAutoField"
