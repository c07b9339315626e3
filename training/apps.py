from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training"

    def ready(self) -> None:
        import training.tasks  # noqa: F401 - registers the task names the services send
        from labweb.jobs import register_reaper
        from labweb.monitor import register_job_kind
        from training.monitor import job_kinds
        from training.services.datasets import datasets_reap
        from training.services.nodes import nodes_reap
        from training.services.prompts import prompts_reap

        register_reaper("training", nodes_reap)
        register_reaper("datasets", datasets_reap)
        register_reaper("prompts", prompts_reap)
        for kind in job_kinds():
            register_job_kind(kind)
