"""Where finished results go: the state directory (default) or an S3-compatible bucket.

S3 settings come from the environment, as boto3 and the serverless deployments expect:

==========================  ===============================================================
``LIPKIT_S3_BUCKET``        bucket name (required)
``LIPKIT_S3_ENDPOINT``      endpoint URL (R2, MinIO, ...); unset = AWS
``LIPKIT_S3_PREFIX``        key prefix, default ``lipkit/``
``LIPKIT_S3_PUBLIC_URL``    public base URL of the bucket; unset = presigned GET URLs
``LIPKIT_S3_REGION``        region (else ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, else auto)
``AWS_ACCESS_KEY_ID``,      credentials, read by boto3 itself (or any other boto3 source)
``AWS_SECRET_ACCESS_KEY``
==========================  ===============================================================
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Protocol

from lipkit.errors import ConfigError
from lipkit.logs import get_logger

log = get_logger(__name__)


class ResultStorage(Protocol):
    name: str

    def save(self, job_id: str, path: Path) -> str:
        """Take the finished file ``path`` (it may be moved away); return its key."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The file on this machine, or None when the result lives elsewhere."""
        ...

    def url(self, key: str) -> str | None:
        """A URL a client can download the result from, or None (served by the API)."""
        ...

    def delete(self, key: str) -> None: ...


class LocalStorage:
    """Results as ``<root>/<job id>.mp4``."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def save(self, job_id: str, path: Path) -> str:
        key = f"{job_id}.mp4"
        shutil.move(str(path), self.root / key)  # a rename on the same file system
        return key

    def local_path(self, key: str) -> Path | None:
        path = self.root / key
        return path if path.is_file() else None

    def url(self, key: str) -> str | None:
        return None

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)


class S3Storage:
    """Results uploaded to ``s3://bucket/<prefix><job id>.mp4``."""

    name = "s3"

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        prefix: str = "lipkit/",
        public_url: str | None = None,
        expires: int = 3600,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.public_url = public_url.rstrip("/") if public_url else None
        self.expires = expires

    @classmethod
    def from_env(cls, expires: int = 3600) -> S3Storage:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        bucket = os.environ.get("LIPKIT_S3_BUCKET")
        if not bucket:
            raise ConfigError(
                "S3 storage needs a bucket",
                hint="set LIPKIT_S3_BUCKET (and LIPKIT_S3_ENDPOINT for R2 or MinIO)",
            )
        region = (
            os.environ.get("LIPKIT_S3_REGION")
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
        )
        client = boto3.client(
            "s3",
            endpoint_url=os.environ.get("LIPKIT_S3_ENDPOINT") or None,
            region_name=region or None,
            config=Config(signature_version="s3v4", retries={"max_attempts": 3}),
        )
        try:
            client.head_bucket(Bucket=bucket)
        except (BotoCoreError, ClientError) as exc:
            raise ConfigError(
                f"cannot reach S3 bucket {bucket!r}: {exc}",
                hint="check LIPKIT_S3_ENDPOINT, LIPKIT_S3_BUCKET and the AWS_* credentials",
            ) from None
        return cls(
            client,
            bucket,
            prefix=os.environ.get("LIPKIT_S3_PREFIX", "lipkit/"),
            public_url=os.environ.get("LIPKIT_S3_PUBLIC_URL") or None,
            expires=expires,
        )

    def save(self, job_id: str, path: Path) -> str:
        key = f"{self.prefix}{job_id}.mp4"
        self.client.upload_file(str(path), self.bucket, key, ExtraArgs={"ContentType": "video/mp4"})
        path.unlink(missing_ok=True)
        log.info("result uploaded", bucket=self.bucket, key=key)
        return key

    def local_path(self, key: str) -> Path | None:
        return None

    def url(self, key: str) -> str:
        if self.public_url:
            return f"{self.public_url}/{key}"
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.expires
        )
        return url

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)


def make_storage(kind: str, state_dir: Path, expires: int = 3600) -> ResultStorage:
    if kind == "s3":
        return S3Storage.from_env(expires)
    return LocalStorage(state_dir / "results")
