import json

from django.core.management.base import BaseCommand, CommandError

from curation.models import Leaf, TaxonomySnapshot
from curation.selectors import taxonomy_diff


class Command(BaseCommand):
    help = (
        "List the leaves changed since a baseline (default: the last import), like `ilab taxonomy diff`: "
        "the qna.yaml of every added or modified leaf, one per line, on standard output; removed leaves "
        "and a summary on standard error."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--baseline",
            type=int,
            metavar="SNAPSHOT_ID",
            help="Compare with this snapshot instead of the last import's.",
        )
        parser.add_argument("--json", dest="as_json", action="store_true", help="Print the whole diff as JSON.")

    def handle(self, *args, baseline, as_json, **options):
        snapshot = None
        if baseline is not None:
            snapshot = TaxonomySnapshot.objects.filter(pk=baseline).first()
            if snapshot is None:
                raise CommandError(f"There is no snapshot {baseline}.")
        diff = taxonomy_diff(baseline=snapshot)
        if as_json:
            self.stdout.write(json.dumps(diff.as_dict(), indent=2))
            return
        for path in diff.changed:
            self.stdout.write(f"{path}/qna.yaml")
        # Only the changed files go to stdout, so the output pipes like `ilab taxonomy diff`'s.
        notes = []
        if diff.baseline is None:
            notes.append("No baseline yet (no import or snapshot): every leaf counts as added.")
        else:
            notes.append(
                f'Compared with snapshot {diff.baseline.id} "{diff.baseline.name}" '
                f"of {diff.baseline.created_at:%Y-%m-%d %H:%M}."
            )
        notes += [f"removed: {path}/qna.yaml" for path in diff.removed]
        invalid = Leaf.objects.filter(path__in=diff.changed, is_valid=False).values_list("path", flat=True)
        notes += [f"invalid: {path}/qna.yaml (export leaves it out)" for path in invalid]
        notes.append(
            f"{len(diff.added)} added, {len(diff.modified)} modified, {len(diff.removed)} removed, "
            f"{diff.unchanged} unchanged."
        )
        for note in notes:
            self.stderr.write(note, style_func=str)
