"""The S3 bucket of a deployment's recordings in CloudFormation, for ``voxpipe deploy sam``.

When ``recording.store`` is ``s3://BUCKET/PREFIX`` the template creates the bucket (private, encrypted, kept
when the stack is deleted) with a lifecycle rule that expires recordings under ``PREFIX/`` after
``retention_days``: expiry is the store's job, not a sweep. The worker's policy may only put objects there.
"""

from __future__ import annotations

from typing import Any

from voxpipe.config.models import Deployment


def _recordings_location(deployment: Deployment) -> tuple[str, str] | None:
    """The bucket and key prefix of ``recording.store`` when the deployment records calls to S3."""
    recording = deployment.recording
    if not recording.enabled or not recording.store.startswith("s3://"):
        return None
    bucket, _, prefix = recording.store.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


def recordings_bucket(deployment: Deployment) -> dict[str, Any]:
    """The recordings bucket, private and encrypted, expiring recordings after ``retention_days`` (a lifecycle rule)."""
    location = _recordings_location(deployment)
    if location is None:
        return {}
    bucket, prefix = location
    properties: dict[str, Any] = {
        "BucketName": bucket,
        "PublicAccessBlockConfiguration": dict.fromkeys(
            ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"), True
        ),
        "BucketEncryption": {
            "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    }
    if deployment.recording.retention_days:
        rule = {"Id": "voxpipe-recordings-expire", "Status": "Enabled"}
        rule |= {"ExpirationInDays": deployment.recording.retention_days}
        rule |= {"Prefix": f"{prefix}/"} if prefix else {}
        properties["LifecycleConfiguration"] = {"Rules": [rule]}
    retain = {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}  # recordings outlive the stack
    return {"RecordingsBucket": {"Type": "AWS::S3::Bucket", **retain, "Properties": properties}}


def recordings_access(deployment: Deployment) -> list[dict[str, Any]]:
    """The statement that lets the call worker store recordings (objects under the prefix, nothing else)."""
    location = _recordings_location(deployment)
    if location is None:
        return []
    bucket, prefix = location
    objects = f"arn:aws:s3:::{bucket}/{prefix}/*" if prefix else f"arn:aws:s3:::{bucket}/*"
    return [{"Effect": "Allow", "Action": "s3:PutObject", "Resource": objects}]
