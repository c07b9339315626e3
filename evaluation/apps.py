from django.apps import AppConfig


class EvaluationConfig(AppConfig):
    name = "evaluation"
    verbose_name = "Evaluation"

    def ready(self) -> None:
        import evaluation.tasks  # noqa: F401 - registers the task names the services send
        from curation.tree_counters import LeafCounters, register
        from evaluation.monitor import job_kind
        from evaluation.services.jobs import evaluations_reap, on_phase_succeeded
        from evaluation.services.results import TREE_FIELDS, tree_counts
        from labweb.jobs import register_reaper
        from labweb.monitor import register_job_kind
        from training.signals import phase_succeeded

        register_reaper("evaluation", evaluations_reap)
        register_job_kind(job_kind())
        phase_succeeded.connect(on_phase_succeeded, dispatch_uid="evaluation-after-phase")
        register(LeafCounters(key="evaluation", label="Evaluation", fields=TREE_FIELDS, counts=tree_counts))
