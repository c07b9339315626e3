from django.apps import AppConfig


class ReviewConfig(AppConfig):
    name = "review"
    verbose_name = "Review of synthetic samples"

    def ready(self) -> None:
        from generation.signals import samples_written
        from review import hooks

        samples_written.connect(hooks.on_samples_written, dispatch_uid="review-sync-samples")
        hooks.register()
