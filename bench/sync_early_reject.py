"""How large a PutObject body may go out without ``Expect: 100-continue`` and still get a clean error.

Why: zr4 sends small PutObject bodies with their headers (no round trip waiting for ``100 Continue``).
A server that refuses a request before reading its body (here: a wrong signature) may close the
connection while the body is still coming; urllib3 still reads the response if the close is clean,
but past what the server drains and the sockets buffer the client sees a broken connection instead
of the S3 error. This finds that size for `rclone serve s3` over HTTPS on loopback, each size a few
times, with the header removed from every PutObject (zr4 removes it only up to its bound):

    python bench/sync_early_reject.py [--sizes-mib 0.5,1,2,4,8,16] [--tries 3]

Prints a Markdown table: per size, how many tries ended in the server's S3 error code.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import botocore.exceptions

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.s3_server import RcloneS3, sync_settings
from zr4.image.sync.client import make_s3_client

MIB = 1024 * 1024


def _without_expect(request: Any, **_: Any) -> None:
    del request.headers["Expect"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes-mib", default="0.5,1,2,4,8,16")
    parser.add_argument("--tries", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(float(x) * MIB) for x in args.sizes_mib.split(",")]
    work = Path(tempfile.mkdtemp(prefix="zr4-early-reject-"))
    server = RcloneS3(work / "data", tls=True).start()
    try:
        assert server.ca_cert is not None
        os.environ["AWS_CA_BUNDLE"] = str(server.ca_cert)  # botocore's CA bundle variable
        settings = sync_settings(server, work, stable_seconds=0.0, max_attempts=1)
        wrong = dataclasses.replace(
            settings, secret_access_key=type(settings.secret_access_key)("not-the-secret")
        )
        client = make_s3_client(wrong)
        client.meta.events.register_last("request-created.s3.PutObject", _without_expect)
        print("| body, no `Expect` | clean S3 error | other outcome |")
        print("|---|---|---|")
        for size in sizes:
            codes: list[str] = []
            other: set[str] = set()
            for _ in range(args.tries):
                try:
                    client.put_object(Bucket=settings.bucket, Key="rejected.bin", Body=os.urandom(size))
                    other.add("accepted?!")
                except botocore.exceptions.ClientError as error:
                    codes.append(error.response["Error"]["Code"])
                except Exception as error:  # the outcome is what is measured
                    other.add(type(error).__name__)
            print(
                f"| {size / MIB:g} MiB | {len(codes)} of {args.tries} ({', '.join(sorted(set(codes))) or '-'}) "
                f"| {', '.join(sorted(other)) or '-'} |"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
