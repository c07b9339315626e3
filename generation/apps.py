from django.apps import AppConfig


class GenerationConfig(AppConfig):
    name = "generation"
    verbose_name = "Synthetic data generation"

    def ready(self) -> None:
        # The services queue these tasks by name (labweb.jobs); every process that sends them must know them.
        import generation.tasks  # noqa: F401
        from generation.monitor import job_kind
        from generation.services.runs import requeue_expired
        from labweb.jobs import register_reaper
        from labweb.monitor import register_job_kind

        register_reaper("generation", requeue_expired)
        register_job_kind(job_kind())
