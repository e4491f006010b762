"""Beam plumbing shared by the jobs: options, counters, metric collection, output swap."""

from __future__ import annotations

import logging
import shutil
from collections import defaultdict
from pathlib import Path

from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.config import Config


def pipeline_options(cfg: Config, beam_args: list[str] | None = None) -> PipelineOptions:
    """Beam options from the config's `beam` section, then command-line extras.

    Arguments given on the command line after the job's own (for example
    `--runner=DataflowRunner --project=...`) override the config.
    """
    b = cfg.beam
    args = [
        f"--runner={b.runner}",
        f"--direct_num_workers={b.direct_num_workers}",
        f"--direct_running_mode={b.direct_running_mode}",
        "--default_sdk_harness_log_level=WARNING",
        *b.extra_args,
        *(beam_args or []),
    ]
    return PipelineOptions(args)


class Counters:
    """Beam counters named `<source>/<name>`, created once per DoFn instance."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, str], object] = {}

    def inc(self, source: str, name: str, n: int = 1) -> None:
        key = (source, name)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = Metrics.counter(source, name)
        counter.inc(n)


def collect_counters(result, namespaces: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """{namespace: {counter name: committed value}} for the given namespaces, sorted."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for c in result.metrics().query(MetricsFilter())["counters"]:
        ns = c.key.metric.namespace
        if ns in namespaces:
            value = c.committed if c.committed is not None else c.attempted
            out[ns][c.key.metric.name] = out[ns].get(c.key.metric.name, 0) + int(value)
    return {ns: dict(sorted(out[ns].items())) for ns in sorted(out)}


def swap_into_place(tmp_dir: Path, final_dir: Path) -> None:
    """Replace `final_dir` by the completed `tmp_dir` (old output removed first).

    Readers trust the manifest inside, written last, so a crash between the two
    steps leaves either the old output, or none.
    """
    if final_dir.exists():
        shutil.rmtree(final_dir)
    tmp_dir.rename(final_dir)


def quiet_beam_logging() -> None:
    """Beam's INFO logging drowns the job's own report; keep warnings."""
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    # the local job service re-logs every worker warning (start-up noise) as its own
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
