"""JSONL uploads (a community replay set, data made elsewhere) into the training storage, checked line by line."""

import re
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings

from labweb.errors import ConflictError, LabError
from training import storage
from training.trainer.data import read_messages

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,150}\.jsonl$")
UPLOADS = "uploads"


def upload_store(*, name: str, chunks: Iterable[bytes], user) -> dict:
    """Write the upload to a local file, check every line as the trainer will read it, then put it in the
    training storage beside the others.

    Names are never reused: a recipe that named a file keeps meaning the same bytes. A refused upload leaves
    nothing behind.
    """
    name = Path(name or "").name
    if not NAME.match(name):
        raise LabError(
            "Name the file like replay-set.jsonl: letters, digits, '.', '_' or '-', ending in .jsonl.", field="file"
        )
    stored = f"{UPLOADS}/{name}"
    taken = ConflictError(f"{stored} exists already; uploads are never replaced. Choose another name.", field="file")
    if storage.exists(stored):
        raise taken
    partial = storage.staging_file(name)
    limit, size = settings.LABWEB_TRAINING_UPLOAD_MAX_BYTES, 0
    try:
        with partial.open("wb") as handle:
            for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise LabError(f"The file is larger than the {limit // 2**20} MiB upload limit.", field="file")
                handle.write(chunk)
        try:
            samples = sum(1 for _ in read_messages(str(partial)))
        except UnicodeDecodeError:
            raise LabError("The file is not UTF-8 text.", field="file", path=name) from None
        except LabError as error:
            raise LabError(error.message, field=error.field or "file", line=error.line, path=name) from None
        if not samples:
            raise LabError("The file holds no sample.", field="file", path=name)
        if not storage.store_file(partial, stored):  # another upload of this name came first
            raise taken
    finally:
        partial.unlink(missing_ok=True)
    return {"path": stored, "samples": samples, "bytes": size}


def upload_list() -> list[dict]:
    store = storage.training_storage()
    try:
        _, names = store.listdir(UPLOADS)
    except FileNotFoundError:
        return []
    return [
        {"path": f"{UPLOADS}/{name}", "bytes": store.size(f"{UPLOADS}/{name}")}
        for name in sorted(names)
        if NAME.match(name)
    ]
