"""A Beam job run as on a Flink/Spark cluster, offline: the portable runner
hands the job to SDK workers in separate processes (Beam's worker pool, each
worker booted as a container would be), and the job reads and writes S3 (moto's
server). S3 settings reach the workers only through the pipeline options."""

from __future__ import annotations

import json
import os

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from tests.cluster import launcher_filesystems, portable_args, s3_server, worker_pool  # noqa: F401 - fixtures

FILES = {"a.txt": b"hello world\n", "sub/b.txt": b"second file\nwith two lines\n"}


class UpperToS3(beam.DoFn):
    """Writes each matched file, uppercased, to `bucket`/out/<its base name>, and
    where it ran (process, cwd, AWS variables seen) to `bucket`/meta/<name>.json."""

    def __init__(self, bucket: str):
        self.bucket = bucket

    def process(self, readable):
        name = readable.metadata.path.rsplit("/", 1)[-1]
        dest = f"{self.bucket}/out/{name}"
        with FileSystems.create(dest) as f:
            f.write(readable.read().upper())
        meta = {"pid": os.getpid(), "cwd": os.getcwd(),
                "aws_env": sorted(k for k in os.environ if k.startswith(("AWS_", "S3_")))}
        with FileSystems.create(f"{self.bucket}/meta/{name}.json") as f:
            f.write(json.dumps(meta).encode())
        yield dest


def test_cluster_s3_job_on_worker_pool(s3_server, worker_pool, tmp_path):  # noqa: F811
    bucket = s3_server.make_bucket("cluster-test")
    src = tmp_path / "in"
    for rel, data in FILES.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    assert s3_server.upload_tree(src, f"{bucket}/in") == [f"{bucket}/in/a.txt", f"{bucket}/in/sub/b.txt"]

    pattern = f"{bucket}/in/**"
    options = PipelineOptions(portable_args(s3_server, worker_pool))
    with launcher_filesystems(options):  # the launcher lists S3 through the job's options
        assert sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list) == [
            f"{bucket}/in/a.txt", f"{bucket}/in/sub/b.txt"]
        with beam.Pipeline(options=options) as p:
            (p
             | beam.Create([pattern])
             | fileio.MatchAll()
             | fileio.ReadMatches()
             | beam.ParDo(UpperToS3(bucket)))

    assert s3_server.list(f"{bucket}/out/") == ["out/a.txt", "out/b.txt"]
    for rel, data in FILES.items():
        name = rel.rsplit("/", 1)[-1]
        assert s3_server.read(f"{bucket}/out/{name}") == data.upper()
        meta = json.loads(s3_server.read(f"{bucket}/meta/{name}.json"))
        assert meta["pid"] != os.getpid()  # ran on an SDK worker, not in the launcher
        assert meta["cwd"] == str(worker_pool.cwd)
        assert meta["aws_env"] == []  # S3 settings came only from the pipeline options
    assert worker_pool.cwd_entries() == []
