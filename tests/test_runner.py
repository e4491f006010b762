"""`pipeline.beam.runner`: the job's options and Beam's DoFn introspection,
each worked out once, with the same answers as Beam's own."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import DirectOptions, StandardOptions
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import userstate
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer

from pipeline.beam.runner import JobOptions, remember_dofn_specs


class Buffered(beam.DoFn):
    """A stateful DoFn: the values of a key in a bag, emitted summed at the window's end."""

    BAG = BagStateSpec("bag", VarIntCoder())
    FLUSH = TimerSpec("flush", userstate.TimeDomain.WATERMARK)

    def process(self, item, bag=beam.DoFn.StateParam(BAG), flush=beam.DoFn.TimerParam(FLUSH)):
        bag.add(item[1])
        flush.set(beam.transforms.window.GlobalWindow().max_timestamp())

    @on_timer(FLUSH)
    def emit(self, bag=beam.DoFn.StateParam(BAG)):
        yield sum(bag.read())


def test_dofn_specs_are_beams_own_and_worked_out_once(monkeypatch):
    remember_dofn_specs()
    remember_dofn_specs()  # idempotent: one layer
    assert userstate.get_dofn_specs.remembers
    stateful = Buffered()
    states, timers = userstate.get_dofn_specs(stateful)
    assert {s.name for s in states} == {"bag"} and {t.name for t in timers} == {"ts-flush"}  # Beam names a timer so
    states.clear()  # the caller's own set: the next answer is whole
    assert {s.name for s in userstate.get_dofn_specs(stateful)[0]} == {"bag"}
    assert userstate.is_stateful_dofn(stateful) and not userstate.is_stateful_dofn(beam.DoFn())

    with beam.Pipeline(runner="FnApiRunner") as p:  # state and timers still run
        out = p | beam.Create([("a", 1), ("a", 2), ("b", 5)]) | beam.ParDo(Buffered())
        assert_that(out, equal_to([3, 5]))


def test_job_options_views_are_made_once_and_share_the_options():
    options = JobOptions(["--runner=FnApiRunner", "--direct_num_workers=3"])
    view = options.view_as(StandardOptions)
    assert view is options.view_as(StandardOptions) and view.runner == "FnApiRunner"
    assert options.view_as(DirectOptions).direct_num_workers == 3
    view.runner = "DirectRunner"  # a view writes the options every view reads
    assert options.view_as(StandardOptions).runner == "DirectRunner"
    assert options.get_all_options()["runner"] == "DirectRunner"
    copied = beam.Pipeline(options=options).options  # Beam deep-copies them: views made again
    assert copied.view_as(DirectOptions).direct_num_workers == 3
    assert copied.view_as(StandardOptions) is not view
