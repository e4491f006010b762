"""Portability: each Beam job, built but not run, is a portable pipeline
any Beam runner can execute (Dataflow, Flink, Spark), and runner options given
on the command line or in the config reach Beam.

No network, credentials or runner install: the graphs are built against the
local runner and only converted with `to_runner_api()`; a runner would receive
exactly that proto.
"""

from __future__ import annotations

import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.options import pipeline_options as po
from apache_beam.portability import common_urns, python_urns
from apache_beam.runners import pipeline_context

from pipeline.beam.runner import pipeline_options
from pipeline.core.config import SOURCES, load_config
from tests.conftest import ROOT

DEMO = ROOT / "configs" / "demo.yaml"
PRODUCTION = ROOT / "configs" / "llama-1.4t.yaml"

# Leaf transforms every portable runner executes: the model's primitives and the
# combiner-lifting component (Beam's runner_api.proto, StandardPTransforms).
PORTABLE_LEAVES = {
    common_urns.primitives.IMPULSE.urn,
    common_urns.primitives.PAR_DO.urn,
    common_urns.primitives.GROUP_BY_KEY.urn,
    common_urns.primitives.FLATTEN.urn,
    common_urns.primitives.ASSIGN_WINDOWS.urn,
    common_urns.combine_components.COMBINE_GROUPED_VALUES.urn,
}
SIDE_INPUTS = {common_urns.side_inputs.ITERABLE.urn, common_urns.side_inputs.MULTIMAP.urn}


def _clean_graph(cfg, items, spill: bool) -> beam.Pipeline:
    """spill: as the local runner builds it (Documents spilled, `pipeline.beam.packed`)."""
    from pipeline.clean import build_clean_pipeline

    p = beam.Pipeline(runner="FnApiRunner")
    out = f"{cfg.out_dir}/clean/run-0"
    build_clean_pipeline(p, cfg, items, out, spill_dir=f"{out}/_spill" if spill else None)
    return p


def _shards_graph(cfg, files, spill: bool) -> beam.Pipeline:
    from pipeline.shards import build_shards_pipeline

    p = beam.Pipeline(runner="FnApiRunner")
    info = {"path": cfg.tokenizer.model_prefix + ".model", "sha256": "0" * 64,
            "vocab_size": cfg.tokenizer.vocab_size, "bos_id": 1, "eos_id": 2}
    out = cfg.shards.out + "/run-0"
    build_shards_pipeline(p, cfg, files, out, info, spill_dir=f"{out}/_spill" if spill else None)
    return p


def _graphs() -> dict[str, beam.Pipeline]:
    """The two jobs under the demo config (its real inputs; spilling, as on the
    local runner) and the production one (its input patterns stand for files:
    nothing is listed or read; Documents inline, as on Dataflow)."""
    from pipeline.inputs import source_patterns

    demo, prod = load_config(DEMO), load_config(PRODUCTION)
    return {
        "clean/demo": _clean_graph(demo, source_patterns(demo), spill=True),
        "clean/production": _clean_graph(prod, source_patterns(prod), spill=False),
        "shards/demo": _shards_graph(demo, [f"{demo.out_dir}/clean/books/part-00000-of-00002.arrow"], spill=True),
        "shards/production": _shards_graph(
            prod, [f"{prod.out_dir}/clean/{s}/part-00000-of-04096.arrow" for s in SOURCES], spill=False),
    }


@pytest.fixture(scope="module")
def protos():
    return {name: p.to_runner_api() for name, p in _graphs().items()}


def test_every_leaf_is_a_portable_primitive(protos):
    for name, proto in protos.items():
        leaves = [t for t in proto.components.transforms.values() if not t.subtransforms]
        assert leaves, name
        for t in leaves:
            if dict(t.inputs) == dict(t.outputs):
                continue  # a pass-through (Create's reshuffle of one element): no work
            assert t.spec.urn in PORTABLE_LEAVES, f"{name}: {t.unique_name} is {t.spec.urn!r}"
        assert len(proto.components.environments) == 1, name  # one Python SDK environment
        assert not proto.requirements, name  # no runner capability beyond the model's


def test_side_inputs_and_grouping_keys_are_portable(protos):
    """Side inputs use the standard access patterns; every GroupByKey's key coder is
    deterministic (a portable runner groups by the encoded key bytes)."""
    from apache_beam.portability.api import beam_runner_api_pb2

    for name, proto in protos.items():
        ctx = pipeline_context.PipelineContext(proto.components)
        side_inputs = groups = 0
        for t in proto.components.transforms.values():
            if t.spec.urn == common_urns.primitives.PAR_DO.urn:
                payload = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload)
                for si in payload.side_inputs.values():
                    assert si.access_pattern.urn in SIDE_INPUTS, f"{name}: {t.unique_name}"
                    side_inputs += 1
            elif t.spec.urn == common_urns.primitives.GROUP_BY_KEY.urn:
                (pcoll,) = t.inputs.values()
                kv = ctx.coders.get_by_id(proto.components.pcollections[pcoll].coder_id)
                key_coder = kv.coders()[0]
                assert key_coder.is_deterministic(), f"{name}: {t.unique_name} keys by {key_coder}"
                groups += 1
        assert groups, name
        if name.startswith("shards"):
            assert side_inputs >= 9, name  # mixture, cutoffs, thresholds, counts...


_UNPICKLE = """
import sys
from apache_beam.internal import pickler
from apache_beam.portability import common_urns, python_urns
from apache_beam.portability.api import beam_runner_api_pb2

for path in sys.argv[1:]:
    proto = beam_runner_api_pb2.Pipeline.FromString(open(path, "rb").read())
    fns = 0
    for t in proto.components.transforms.values():
        if t.spec.urn == common_urns.primitives.PAR_DO.urn:
            fn = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload).do_fn
            if fn.urn == python_urns.PICKLED_DOFN_INFO:
                pickler.loads(fn.payload)
                fns += 1
        elif t.spec.urn in (common_urns.composites.COMBINE_PER_KEY.urn,
                            common_urns.combine_components.COMBINE_GROUPED_VALUES.urn):
            pickler.loads(beam_runner_api_pb2.CombinePayload.FromString(t.spec.payload).combine_fn.payload)
            fns += 1
    print(fns)
"""


def test_every_function_unpickles_in_a_fresh_worker_process(protos, tmp_path):
    """A remote worker gets the DoFns and CombineFns as Beam-pickled bytes inside
    the proto: they must load in a new interpreter, without this process's state."""
    paths = []
    for name, proto in protos.items():
        paths.append(tmp_path / (name.replace("/", "-") + ".pb"))
        paths[-1].write_bytes(proto.SerializeToString())
    out = subprocess.run([sys.executable, "-c", _UNPICKLE, *map(str, paths)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = [int(x) for x in out.stdout.split()]
    assert loaded == [_count_functions(proto) for proto in protos.values()]
    assert min(loaded) > 10


def _count_functions(proto) -> int:
    """Pickled DoFns and CombineFns in the proto; the only other DoFn is the SDK's
    own key-with-None of a global combine, which has no payload."""
    from apache_beam.portability.api import beam_runner_api_pb2

    n = 0
    for t in proto.components.transforms.values():
        if t.spec.urn == common_urns.primitives.PAR_DO.urn:
            urn = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload).do_fn.urn
            assert urn in (python_urns.PICKLED_DOFN_INFO, python_urns.KEY_WITH_NONE_DOFN), t.unique_name
            n += urn == python_urns.PICKLED_DOFN_INFO
        elif t.spec.urn in (common_urns.composites.COMBINE_PER_KEY.urn,
                            common_urns.combine_components.COMBINE_GROUPED_VALUES.urn):
            n += 1
    return n


def _cloud(options):
    return options.view_as(po.GoogleCloudOptions)  # part of Beam's core options


def test_command_line_runner_options_reach_beam():
    opts = pipeline_options(load_config(DEMO), [
        "--runner=DataflowRunner", "--project=p", "--region=r", "--temp_location=gs://b/t",
    ])
    assert opts.view_as(po.StandardOptions).runner == "DataflowRunner"  # overrides the config's
    cloud = _cloud(opts)
    assert (cloud.project, cloud.region, cloud.temp_location) == ("p", "r", "gs://b/t")
    assert opts.view_as(po.DirectOptions).direct_num_workers == 2  # the config's, kept


def test_production_config_options_reach_beam():
    cfg = load_config(PRODUCTION)
    opts = pipeline_options(cfg)
    assert opts.view_as(po.StandardOptions).runner == "DataflowRunner"
    workers = opts.view_as(po.WorkerOptions)
    assert (workers.max_num_workers, workers.machine_type) == (2000, "n2-highmem-8")
    assert opts.view_as(po.SetupOptions).requirements_file == "requirements.txt"
    assert "use_runner_v2" in opts.view_as(po.DebugOptions).experiments
    cloud = _cloud(opts)
    assert (cloud.project, cloud.region, cloud.temp_location) == ("YOUR-PROJECT", "us-central1", "gs://YOUR-BUCKET/tmp")
    # the command line comes after the config: it wins
    assert _cloud(pipeline_options(cfg, ["--region=europe-west4"])).region == "europe-west4"


@pytest.mark.parametrize("command", ["clean", "shards"])
def test_cli_hands_unknown_arguments_to_beam(monkeypatch, capsys, command):
    """`python -m pipeline clean|shards ... --runner=X --project=P`: the arguments the
    command does not know go to the job, and from there into its Beam options."""
    import pipeline.clean
    import pipeline.shards
    from pipeline.__main__ import main

    seen = {}

    def fake_job(cfg, beam_args=None, **_):  # and --force, --allow-mixed
        seen["options"] = pipeline_options(cfg, beam_args)
        return {"files": [], "counters": {}, "shards": [], "tokens_written": 0, "seconds": 0.0}

    monkeypatch.setattr(pipeline.clean, "run_clean", fake_job)
    monkeypatch.setattr(pipeline.shards, "run_shards", fake_job)
    argv = [command, "--config", str(DEMO), "--set", "beam.direct_num_workers=3",
            "--runner=FlinkRunner", "--flink_master=host:8081", "--environment_type=DOCKER"]
    assert main(argv) == 0
    opts = seen["options"]
    assert opts.view_as(po.StandardOptions).runner == "FlinkRunner"
    assert opts.view_as(po.FlinkRunnerOptions).flink_master == "host:8081"
    assert opts.view_as(po.PortableOptions).environment_type == "DOCKER"
    assert opts.view_as(po.DirectOptions).direct_num_workers == 3  # --set reached the config
    capsys.readouterr()


def test_ctrl_c_in_a_job_is_one_line_and_exit_130(monkeypatch, capsys):
    import pipeline.clean
    from pipeline.__main__ import main

    def interrupted(cfg, beam_args=None, **_):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.clean, "run_clean", interrupted)
    assert main(["clean", "--config", str(DEMO)]) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted: clean stopped") and "Traceback" not in err
