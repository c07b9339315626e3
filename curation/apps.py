from django.apps import AppConfig


class CurationConfig(AppConfig):
    name = "curation"
    verbose_name = "Taxonomy curation"

    def ready(self) -> None:
        import curation.tasks  # noqa: F401 - registers the task names the services send
        from curation.monitor import job_kind
        from curation.services.imports.jobs import import_jobs_reap
        from labweb.jobs import register_reaper
        from labweb.monitor import register_job_kind

        register_reaper("imports", import_jobs_reap)
        register_job_kind(job_kind())
