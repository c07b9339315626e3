from django.core.management.base import BaseCommand, CommandError

from generation.models import GenerationRun
from generation.services.counters import counters_recount


class Command(BaseCommand):
    help = (
        "Recount runs' counters (the totals the run pages and the API read) from their work items and repair "
        "those that drifted; prints what differed. Safe while workers run."
    )

    def add_arguments(self, parser):
        parser.add_argument("runs", nargs="*", type=int, metavar="RUN_ID", help="Runs to recount (default: all).")
        parser.add_argument(
            "--check", action="store_true", help="Change nothing; exit with status 1 when a counter is wrong."
        )

    def handle(self, *args, runs, check, **options):
        known = GenerationRun.objects.order_by("pk").values_list("pk", flat=True)
        if runs:
            missing = sorted(set(runs) - set(known.filter(pk__in=runs)))
            if missing:
                raise CommandError(f"There is no run {', '.join(map(str, missing))}.")
            known = known.filter(pk__in=runs)
        drifted = 0
        for run_id in known:
            differences = counters_recount(run_id, repair=not check)
            if differences:
                drifted += 1
                self.stdout.write(f"Run {run_id}: {len(differences)} counters differed from its work items:")
                for line in differences[:50]:
                    self.stdout.write(f"  {line}")
                if len(differences) > 50:
                    self.stdout.write(f"  ... and {len(differences) - 50} more")
        verb = "are wrong" if check else "were repaired"
        self.stderr.write(f"{len(known)} runs recounted; the counters of {drifted} {verb}.")
        if check and drifted:
            raise CommandError(f"The counters of {drifted} runs differ from their work items.", returncode=1)
