from django.core.management.base import BaseCommand

from review.services.sync import review_sync


class Command(BaseCommand):
    help = "Open review items for samples that have none (samples written before review was installed)."

    def handle(self, *args, **options) -> None:
        self.stdout.write(f"Opened {review_sync()} review item(s).")
