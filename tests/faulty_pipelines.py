"""Pipelines that fail on purpose, to prove a failing job fails alone.

They are referenced from test routes as ``"faulty_pipelines:Raises"`` and
friends (the runner imports ``module:Class`` names), and run in real worker
processes like any pipeline.
"""

from __future__ import annotations

import os
import time

from pipelines.base import InputSpec, Pipeline
from pipelines.errors import PipelineError
from pipelines.findings import Findings
from pipelines.volume import Volume

_ANY_CT = InputSpec(modalities=frozenset({"CT"}))


class Raises(Pipeline):
    """Raises a PipelineError with a clear reason."""

    name = "faulty-raises"
    version = "0.0.1"
    accepts = _ANY_CT

    def run(self, volume: Volume) -> Findings:
        raise PipelineError("deliberate failure for the test")


class Buggy(Pipeline):
    """Has a bug (an unexpected exception type)."""

    name = "faulty-buggy"
    version = "0.0.1"
    accepts = _ANY_CT

    def run(self, volume: Volume) -> Findings:
        return {}["missing"]  # type: ignore[no-any-return]


class Crashes(Pipeline):
    """Kills its own worker process, like a segfault or the OOM killer would."""

    name = "faulty-crashes"
    version = "0.0.1"
    accepts = _ANY_CT

    def run(self, volume: Volume) -> Findings:
        os._exit(137)


class Hangs(Pipeline):
    """Never finishes (until the per-job timeout kills it)."""

    name = "faulty-hangs"
    version = "0.0.1"
    accepts = _ANY_CT

    def run(self, volume: Volume) -> Findings:
        time.sleep(3600)
        raise AssertionError("unreachable")


class Empty(Pipeline):
    """Finds nothing: no segments, no measurements."""

    name = "empty"
    version = "0.0.1"
    accepts = _ANY_CT

    def run(self, volume: Volume) -> Findings:
        return Findings(self.name, self.version, volume.sop_instance_uids)


class Slow(Pipeline):
    """ct-anatomy after a pause, so a test can kill the node while the job runs."""

    name = "slow-ct-anatomy"
    version = "0.0.1"
    accepts = _ANY_CT

    def run(self, volume: Volume) -> Findings:
        from pipelines.ct_anatomy import CtAnatomyPipeline

        time.sleep(float(os.environ.get("AINODE_TEST_SLOW_SECONDS", "4")))
        found = CtAnatomyPipeline().run(volume)
        return Findings(
            self.name,
            self.version,
            found.source_sop_instance_uids,
            segments=found.segments,
            measurements=found.measurements,
        )


class Hog(Pipeline):
    """Tries to allocate far more memory than its worker may have."""

    name = "faulty-hog"
    version = "0.0.1"
    accepts = _ANY_CT

    def run(self, volume: Volume) -> Findings:
        import numpy as np

        hoard = np.ones((64, 1024, 1024, 1024), dtype=np.uint8)  # 64 GiB
        raise AssertionError(f"allocated {hoard.nbytes} bytes")


class LungsAndBone(Pipeline):
    """Not faulty: ct-anatomy's lungs and bone only.

    Made disjoint, so a LABELMAP SEG can hold them.
    """

    name = "lungs-and-bone"
    version = "1.0.0"
    accepts = _ANY_CT

    def run(self, volume: Volume) -> Findings:
        import dataclasses

        from pipelines.ct_anatomy import CtAnatomyPipeline

        found = CtAnatomyPipeline().run(volume)
        lungs, bone = (
            next(s for s in found.segments if s.description.label.lower().startswith(name))
            for name in ("lung", "bone")
        )
        renumber = {lungs.description.number: 1, bone.description.number: 2}
        lungs = dataclasses.replace(
            lungs, description=dataclasses.replace(lungs.description, number=1)
        )
        bone = dataclasses.replace(
            bone,
            mask=bone.mask & ~lungs.mask,
            description=dataclasses.replace(bone.description, number=2),
        )
        return dataclasses.replace(
            found,
            pipeline_name=self.name,
            segments=(lungs, bone),
            measurements=tuple(
                dataclasses.replace(m, segment_number=renumber[m.segment_number])
                for m in found.measurements
                if m.segment_number in renumber
            ),
        )
