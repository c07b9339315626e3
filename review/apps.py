from django.apps import AppConfig


class ReviewConfig(AppConfig):
    name = "review"
    verbose_name = "Review of synthetic samples"

    def ready(self) -> None:
        from generation.signals import duplicates_marked, samples_written
        from review import hooks

        samples_written.connect(hooks.on_samples_written, dispatch_uid="review-open-items")
        duplicates_marked.connect(hooks.on_duplicates_marked, dispatch_uid="review-mark-duplicates")
        hooks.register()

        import review.tasks  # noqa: F401 - registers the task names the services send
        from labweb.jobs import register_reaper
        from labweb.monitor import register_job_kind
        from review.monitor import job_kind
        from review.services.bulk import bulk_reap

        register_reaper("review", bulk_reap)
        register_job_kind(job_kind())

        from curation.tree_counters import LeafCounters, register
        from review.selectors import leaf_counts

        register(
            LeafCounters(
                key="review",
                label="Review",
                fields=("approved", "edited", "rejected", "pending"),
                counts=leaf_counts,
            )
        )
