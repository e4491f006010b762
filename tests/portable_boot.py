#!/usr/bin/env python
"""A Python stand-in for the Beam Python SDK container's boot program.

A worker pool started with `--container_executable` runs this, once per SDK
worker, with the container contract's flags (--id, --provision_endpoint,
--control_endpoint, --logging_endpoint, --artifact_endpoint). It does what the
container's Go `boot` does, minus installing packages (the project package is
already importable, as in a worker image):

1. asks the provision service for the job's ProvisionInfo (gRPC metadata
   `worker_id`);
2. fetches the staged artifacts, if the runner lists any, into
   SEMI_PERSISTENT_DIRECTORY/staged (where `sdk_worker_main` looks for a
   pickled main session); nothing is installed, and a failed fetch is logged,
   not fatal;
3. sets the environment `sdk_worker_main` reads: PIPELINE_OPTIONS (the
   ProvisionInfo's pipeline options Struct as JSON, its keys as they come,
   e.g. `beam:option:s3_endpoint_url:v1`), CONTROL_API_SERVICE_DESCRIPTOR,
   LOGGING_API_SERVICE_DESCRIPTOR, STATUS_API_SERVICE_DESCRIPTOR (when given),
   WORKER_ID, SEMI_PERSISTENT_DIRECTORY, RUNNER_CAPABILITIES;
4. exec's `python -m apache_beam.runners.worker.sdk_worker_main`.

Pipeline options reach the worker only this way: nothing is taken from the
pool's environment besides what any process inherits.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


def _log(msg: str) -> None:
    print(f"[portable_boot pid={os.getpid()}] {msg}", file=sys.stderr, flush=True)


def _descriptor(url: str) -> str:
    """An ApiServiceDescriptor in protobuf text format, as sdk_worker_main parses it."""
    from apache_beam.portability.api import endpoints_pb2
    from google.protobuf import text_format

    return text_format.MessageToString(endpoints_pb2.ApiServiceDescriptor(url=url), as_one_line=True)


def _provision_info(endpoint: str, worker_id: str, timeout: float = 60.0):
    import grpc
    from apache_beam.portability.api import (
        beam_provision_api_pb2,
        beam_provision_api_pb2_grpc,
    )

    with grpc.insecure_channel(endpoint) as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout)
        stub = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel)
        response = stub.GetProvisionInfo(
            beam_provision_api_pb2.GetProvisionInfoRequest(),
            metadata=[("worker_id", worker_id)],
            timeout=timeout,
        )
    return response.info


def _staged_name(artifact, index: int) -> str:
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    if artifact.role_urn == common_urns.artifact_roles.STAGING_TO.urn:
        name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(artifact.role_payload).staged_name
        if name:
            return os.path.basename(name)
    if artifact.type_urn == common_urns.artifact_types.FILE.urn:
        path = beam_runner_api_pb2.ArtifactFilePayload.FromString(artifact.type_payload).path
        if path:
            return os.path.basename(path)
    return f"artifact-{index}"


def _fetch_artifacts(endpoint: str, dependencies, dest: str) -> None:
    """Best effort: write each dependency under `dest`; never raises."""
    if not dependencies:
        return
    try:
        import grpc
        from apache_beam.portability.api import (
            beam_artifact_api_pb2,
            beam_artifact_api_pb2_grpc,
        )

        os.makedirs(dest, exist_ok=True)
        with grpc.insecure_channel(endpoint) as channel:
            stub = beam_artifact_api_pb2_grpc.ArtifactRetrievalServiceStub(channel)
            for i, artifact in enumerate(dependencies):
                name = _staged_name(artifact, i)
                try:
                    chunks = stub.GetArtifact(beam_artifact_api_pb2.GetArtifactRequest(artifact=artifact),
                                              timeout=60)
                    with open(os.path.join(dest, name), "wb") as out:
                        out.writelines(chunk.data for chunk in chunks)
                except Exception as e:  # noqa: BLE001 - best effort, as documented
                    _log(f"could not fetch artifact {name!r}: {e!r}")
    except Exception as e:  # noqa: BLE001
        _log(f"could not fetch artifacts: {e!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--id", required=True)
    parser.add_argument("--provision_endpoint", required=True)
    parser.add_argument("--control_endpoint", default="")
    parser.add_argument("--logging_endpoint", default="")
    parser.add_argument("--artifact_endpoint", default="")
    parser.add_argument("--semi_persistent_directory", default="")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _log(f"ignoring unknown flags {unknown}")

    # worker_pool_main starts each worker with stdout=PIPE and never reads it: a
    # chatty worker would block once the pipe is full. Send stdout to stderr.
    os.dup2(2, 1)

    from google.protobuf import json_format

    t0 = time.monotonic()
    info = _provision_info(args.provision_endpoint, args.id)

    control = info.control_endpoint.url or args.control_endpoint
    logging_url = info.logging_endpoint.url or args.logging_endpoint
    artifact = info.artifact_endpoint.url or args.artifact_endpoint
    if not control:
        raise SystemExit("portable_boot: no control endpoint (neither in the provision info nor --control_endpoint)")

    semi = args.semi_persistent_directory or tempfile.mkdtemp(prefix=f"beam-worker-{args.id}-")
    os.makedirs(semi, exist_ok=True)
    if artifact:
        _fetch_artifacts(artifact, list(info.dependencies), os.path.join(semi, "staged"))

    env = dict(os.environ)
    env["PIPELINE_OPTIONS"] = json_format.MessageToJson(info.pipeline_options)
    env["CONTROL_API_SERVICE_DESCRIPTOR"] = _descriptor(control)
    if logging_url:
        env["LOGGING_API_SERVICE_DESCRIPTOR"] = _descriptor(logging_url)
    if info.HasField("status_endpoint") and info.status_endpoint.url:
        env["STATUS_API_SERVICE_DESCRIPTOR"] = _descriptor(info.status_endpoint.url)
    env["WORKER_ID"] = args.id
    env["SEMI_PERSISTENT_DIRECTORY"] = semi
    env["RUNNER_CAPABILITIES"] = " ".join(info.runner_capabilities)
    _log(f"worker {args.id}: control={control} logging={logging_url or '-'} semi={semi} "
         f"({len(info.dependencies)} artifacts, {time.monotonic() - t0:.1f}s)")

    sys.stderr.flush()
    os.execve(sys.executable,
              [sys.executable, "-m", "apache_beam.runners.worker.sdk_worker_main"], env)


if __name__ == "__main__":
    main()
