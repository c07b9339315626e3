"""Strict readers for settings from the environment: a bad value is an error, never a silent default."""

import os

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off.")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None


def env_str(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def embedded_secret_key(path) -> str:
    """The key of a first-run install on the embedded database: made once, kept in var/ readable by its owner only.

    A server deployment (DATABASE_URL set) must give SECRET_KEY itself; this only spares a first run the step.
    """
    import secrets
    from pathlib import Path

    path = Path(path)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(50)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return path.read_text().strip()
        with os.fdopen(fd, "w") as handle:
            handle.write(key)
        return key


def training_storage(bucket: str, *, endpoint_url: str = "", region: str = "", prefix: str = "") -> dict:
    """The `STORAGES["training"]` entry: the training folder, or the named S3-compatible bucket (credentials from
    boto3's usual places: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, an instance role)."""
    if not bucket:
        return {"BACKEND": "training.storage.TrainingDirStorage"}
    from importlib.util import find_spec

    missing = [package for package in ("storages", "boto3") if find_spec(package) is None]
    if missing:
        raise ImproperlyConfigured(
            f"LABWEB_TRAINING_S3_BUCKET is set, but {' and '.join(missing)} is not installed: "
            "pip install -r requirements-s3.txt (django-storages[s3] and boto3)."
        )
    return {
        "BACKEND": "training.s3.TrainingS3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "endpoint_url": endpoint_url or None,
            "region_name": region or None,
            "location": prefix.strip("/"),
            "file_overwrite": False,  # an upload's name is never reused; a rebuild deletes its files first
            "max_memory_size": 64 * 2**20,  # what an `open` of an object holds in memory before spilling to disk
        },
    }
