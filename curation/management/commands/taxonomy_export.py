import os
import tempfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from curation.selectors import TaxonomyExport, taxonomy_export

TAR_SUFFIXES = (".tar.gz", ".tgz")


class Command(BaseCommand):
    help = (
        "Export the valid leaves as an InstructLab taxonomy: a .tar.gz/.tgz archive, or a directory. "
        "Invalid leaves are left out and listed."
    )

    def add_arguments(self, parser):
        parser.add_argument("dest", help="An archive path ending in .tar.gz or .tgz, or a directory.")
        parser.add_argument(
            "--force",
            action="store_true",
            help="Overwrite an existing archive, or write into a non-empty directory "
            "(files of the same name are replaced; other files stay).",
        )

    def handle(self, *args, dest, force, **options):
        target = Path(dest).expanduser()
        lower = target.name.lower()
        if lower.endswith((".zip", ".tar", ".gz")) and not lower.endswith(TAR_SUFFIXES):
            raise CommandError(f'"{target}": the export archive must end in .tar.gz or .tgz.')
        export = taxonomy_export()
        if lower.endswith(TAR_SUFFIXES):
            self._write_archive(export, target, force=force)
        else:
            self._write_directory(export, target, force=force)
        self.stdout.write(
            self.style.SUCCESS(f"Wrote {export.leaf_count} leaves ({export.file_count} files) to {target}.")
        )
        if export.skipped:
            self.stdout.write(self.style.WARNING(f"Skipped {export.skipped} invalid leaves:"))
            for leaf in export.skipped_leaves():
                errors = [p for p in leaf.problems if p.get("level", "error") == "error"]
                reason = f" ({len(errors)} problems; first: {errors[0].get('message')})" if errors else ""
                self.stdout.write(f"  {leaf.qna_path}{reason}")

    def _write_archive(self, export: TaxonomyExport, target: Path, *, force: bool) -> None:
        if target.is_dir():
            raise CommandError(f'"{target}" is a directory.')
        if target.exists() and not force:
            raise CommandError(f'"{target}" exists; use --force to overwrite it.')
        if not target.parent.is_dir():
            raise CommandError(f'The folder "{target.parent}" does not exist.')
        # Write beside the target and rename, so a failed export never leaves half an archive in its place.
        handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(handle, "wb") as stream:
                export.write_tar(stream)
            os.chmod(temp, 0o644)
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def _write_directory(self, export: TaxonomyExport, target: Path, *, force: bool) -> None:
        if target.exists() and not target.is_dir():
            raise CommandError(f'"{target}" exists and is not a directory.')
        if target.is_dir() and any(target.iterdir()):
            if not force:
                raise CommandError(f'"{target}" is not empty; use --force to write into it.')
            self.stdout.write(
                self.style.WARNING(
                    f"Writing into the non-empty {target}: files that the export does not hold are left as they are."
                )
            )
        target.mkdir(parents=True, exist_ok=True)
        export.write_directory(target)
