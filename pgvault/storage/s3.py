"""S3-compatible object store (Cloudflare R2, MinIO, AWS) through boto3.

R2 rules from DESIGN: fixed multipart part size (all parts but the last equal), optional
path-style addressing, region "auto", and checksum settings R2 accepts
(request/response checksums only "when_required"). Credentials come from the standard
AWS environment variables or a named profile, never from the pgvault config file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import boto3  # noqa: TID251 - this module is the boto3 adapter
import botocore.exceptions  # noqa: TID251
from boto3.s3.transfer import TransferConfig  # noqa: TID251
from botocore.config import Config  # noqa: TID251

from pgvault.errors import ObjectMissing, StoreError, StoreUnavailable
from pgvault.storage.base import ObjectInfo, ObjectStore

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from pgvault.config import StorageSettings

_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
_AUTH_CODES = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


_TIMEOUTS = (
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
    TimeoutError,
)


def _client_error(exc: botocore.exceptions.ClientError, what: str) -> Exception:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if code in _MISSING_CODES:
        return ObjectMissing(f"{what}: not found")
    if code in _AUTH_CODES:
        return StoreUnavailable(f"{what}: access denied ({code}); check the store credentials")
    if code == "NoSuchBucket":
        return StoreUnavailable(f"{what}: bucket does not exist")
    return StoreError(f"{what}: {code or 'error'}")


def _translate(exc: Exception, what: str) -> Exception:
    """Library exception -> pgvault error with a one-line, secret-free message."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return _client_error(exc, what)
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return StoreUnavailable(
            f"{what}: no S3 credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)"
        )
    if isinstance(exc, _TIMEOUTS):  # a hung store: the call gave up (storage timeouts)
        return StoreUnavailable(f"{what}: the store did not answer in time ({type(exc).__name__})")
    if isinstance(exc, botocore.exceptions.EndpointConnectionError | ConnectionError):
        return StoreUnavailable(f"{what}: endpoint unreachable")
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return StoreError(f"{what}: {type(exc).__name__}")
    return exc


class S3Store(ObjectStore):
    def __init__(self, settings: StorageSettings) -> None:
        self.bucket = settings.bucket
        self.endpoint = settings.endpoint_url or "aws"
        cfg = Config(
            region_name=settings.region or None,
            s3={"addressing_style": "path" if settings.path_style else "auto"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # a store that accepts connections but stops answering must fail the call, not
            # hang it: bounded connect/read waits, a bounded number of tries
            retries={"max_attempts": settings.max_attempts, "mode": "standard"},
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_pool_connections=max(10, settings.max_concurrency * 2),
        )
        try:
            session = boto3.Session(profile_name=settings.profile or None)
            self.client: S3Client = session.client(
                "s3", endpoint_url=settings.endpoint_url or None, config=cfg
            )
        except botocore.exceptions.BotoCoreError as exc:
            raise _translate(exc, self.describe()) from None
        part = settings.part_size_mb * 1024 * 1024
        # threshold == chunksize: every multipart upload has equal parts but the last.
        self.transfer = TransferConfig(
            multipart_threshold=part,
            multipart_chunksize=part,
            max_concurrency=settings.max_concurrency,
            use_threads=settings.max_concurrency > 1,
        )

    def describe(self) -> str:
        return f"s3://{self.bucket} ({self.endpoint})"

    def _what(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def put_file(self, key: str, path: Path, metadata: Mapping[str, str]) -> None:
        try:
            self.client.upload_file(
                str(path),
                self.bucket,
                key,
                ExtraArgs={"Metadata": dict(metadata)},
                Config=self.transfer,
            )
        except Exception as exc:
            raise _translate(exc, self._what(key)) from None

    def put_bytes(self, key: str, data: bytes, metadata: Mapping[str, str]) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, Metadata=dict(metadata))
        except Exception as exc:
            raise _translate(exc, self._what(key)) from None

    def head(self, key: str) -> ObjectInfo | None:
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            err = _translate(exc, self._what(key))
            if isinstance(err, ObjectMissing):
                return None
            raise err from None
        return ObjectInfo(
            key, int(resp["ContentLength"]), dict(resp.get("Metadata", {})), resp["LastModified"]
        )

    @contextlib.contextmanager
    def _reader(self, key: str) -> Iterator[BinaryIO]:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise _translate(exc, self._what(key)) from None
        body = resp["Body"]
        try:
            yield cast(BinaryIO, _BodyReader(body, self._what(key)))
        finally:
            body.close()

    def open_read(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        return self._reader(key)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            err = _translate(exc, self._what(key))
            if not isinstance(err, ObjectMissing):
                raise err from None

    def delete_many(self, keys: Sequence[str]) -> None:
        """DeleteObjects, 1000 keys per request (R2 and MinIO support it too)."""
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            if not chunk:
                continue
            try:
                resp = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
                )
            except Exception as exc:
                raise _translate(exc, f"s3://{self.bucket} (delete {len(chunk)} objects)") from None
            errors = [e for e in resp.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                raise StoreError(
                    f"s3://{self.bucket}: {len(errors)} deletion(s) failed, e.g. "
                    f"{errors[0].get('Key')}: {errors[0].get('Code')}"
                )

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    yield ObjectInfo(obj["Key"], int(obj["Size"]), {}, obj["LastModified"])
        except Exception as exc:
            raise _translate(exc, f"s3://{self.bucket}/{prefix}") from None

    def ensure_bucket(self) -> bool:
        """Create the bucket if it is missing (init, tests). True when created."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return False
        except Exception as exc:
            err = _translate(exc, f"s3://{self.bucket}")
            if not isinstance(err, ObjectMissing | StoreUnavailable):
                raise err from None
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise _translate(exc, f"s3://{self.bucket}") from None
        return True


class _BodyReader:
    """Wraps botocore's StreamingBody so read errors become StoreError."""

    def __init__(self, body: Any, what: str) -> None:
        self._body = body
        self._what = what

    def read(self, n: int = -1) -> bytes:
        try:
            return cast(bytes, self._body.read(n if n >= 0 else None))
        except Exception as exc:
            raise _translate(exc, self._what) from None

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._body.close()
