"""The training storage in an S3-compatible bucket (django-storages and boto3: `requirements-s3.txt`)."""

from collections.abc import Iterator

from botocore.exceptions import ClientError
from storages.backends.s3 import S3Storage
from storages.utils import clean_name

from training.storage import CHUNK


class TrainingS3Storage(S3Storage):
    def stream(self, name: str) -> Iterator[bytes]:
        """The object's body as it arrives, a chunk at a time. (`open` would first download the whole object
        into a spooled temporary file, in memory up to `max_memory_size`.)"""
        try:
            body = self.bucket.Object(self._normalize_name(clean_name(name))).get()["Body"]
        except ClientError as error:
            if error.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                raise FileNotFoundError(f"{name} is not in the bucket") from None
            raise
        return _body(body)


def _body(body) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(CHUNK)
    finally:
        body.close()
