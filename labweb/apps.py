from django.apps import AppConfig


class LabwebConfig(AppConfig):
    name = "labweb"
    verbose_name = "LabWeb"

    def ready(self) -> None:
        # Every process that runs Django (web, commands, workers) sends tasks through this app and its settings.
        import labweb.celery  # noqa: F401
