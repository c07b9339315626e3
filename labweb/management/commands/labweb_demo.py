import secrets
import time
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.migrations.executor import MigrationExecutor

from curation.management.commands._report import write_import
from curation.models import TaxonomyImport
from curation.services import ImportSource, taxonomy_import
from generation.sdg.teachers import TeacherError
from generation.services.teachers import teacher_ensure_default, teacher_prepare
from labweb.roles import ROLES

DEMO_TAXONOMY = Path(__file__).resolve().parents[3] / "curation" / "demo" / "taxonomy"
URL = "http://127.0.0.1:8000/"


class Command(BaseCommand):
    help = (
        "First-run setup, safe to repeat: check the role groups, create or update the admin superuser, "
        "and import the demo taxonomy as that user."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin", help="The admin's username (default: admin).")
        parser.add_argument(
            "--password",
            help="Set this password. Without it a new admin gets a random one, and an existing admin keeps theirs.",
        )
        parser.add_argument("--email", default="", help="The admin's e-mail address, for a new admin.")
        parser.add_argument(
            "--skip-model",
            action="store_true",
            help="Do not convert the embedded teacher's GGUF weights now (its first use does it instead).",
        )

    def handle(self, *args, username, password, email, skip_model=False, **options):
        self._check_database()
        user = self._admin(username, password, email)
        record = taxonomy_import(source=ImportSource.directory(DEMO_TAXONOMY), user=user, from_shell=True)
        if record.status == TaxonomyImport.Status.REFUSED:
            raise CommandError(f"The demo taxonomy was refused: {record.message}")
        write_import(self, record)
        teacher = teacher_ensure_default()
        self.stdout.write(
            f"Default teacher: {teacher.name} ({teacher.model}); add an OpenAI-compatible server "
            "on the Teachers page for real throughput."
        )
        if not skip_model:
            started = time.monotonic()
            try:
                folder = teacher_prepare(teacher)
            except TeacherError as error:  # the app still runs; a run on this teacher says the same
                self.stderr.write(f"The default teacher's model is not ready: {error}")
            else:
                if folder is not None:
                    self.stdout.write(f"Teacher weights ready in {folder} ({time.monotonic() - started:.0f} s).")
        self.stdout.write(self.style.SUCCESS(f"Ready. Start the server with `manage.py runserver` and open {URL}"))

    def _check_database(self) -> None:
        connection = connections[DEFAULT_DB_ALIAS]
        executor = MigrationExecutor(connection)
        if executor.migration_plan(executor.loader.graph.leaf_nodes()):
            raise CommandError("The database is not migrated: run `manage.py migrate` first.")
        for role in ROLES:  # the migration makes them; a flushed database may have lost them
            Group.objects.get_or_create(name=role)
        self.stdout.write(f"Role groups present: {', '.join(ROLES)}.")

    @transaction.atomic
    def _admin(self, username: str, password: str | None, email: str):
        model = get_user_model()
        user = model.objects.select_for_update().filter(**{model.USERNAME_FIELD: username}).first()
        created = user is None
        if created:
            user = model(**{model.USERNAME_FIELD: username}, email=email)
        generated = created and not password
        if generated:
            password = secrets.token_urlsafe(12)
        if password:
            try:
                validate_password(password, user)
            except ValidationError as error:
                raise CommandError(f"Password refused: {' '.join(error.messages)}") from None
            user.set_password(password)
        promoted = not (user.is_superuser and user.is_staff and user.is_active)
        user.is_superuser = user.is_staff = user.is_active = True
        user.save()

        if generated:
            self.stdout.write(self.style.SUCCESS(f"Admin user: {username} / password: {password}"))
            self.stdout.write("Note the password now: it is not shown again.")
        elif created:
            self.stdout.write(self.style.SUCCESS(f"Admin user: {username} created with the password you gave."))
        elif password:
            self.stdout.write(self.style.SUCCESS(f"Admin user: {username} exists; password set to the one you gave."))
        else:
            self.stdout.write(f"Admin user: {username} exists; its password is unchanged.")
        if promoted and not created:
            self.stdout.write(f"{username} is now an active superuser.")
        return user
