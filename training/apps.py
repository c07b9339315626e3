from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training"

    def ready(self) -> None:
        from labweb.jobs import register_reaper
        from training.services.nodes import nodes_reap

        register_reaper("training", nodes_reap)
