from django.apps import AppConfig


class LabwebConfig(AppConfig):
    name = "labweb"
    verbose_name = "LabWeb"
