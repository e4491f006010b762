"""DataTrove's side of the end-to-end comparison (`tests.bench.peers`): run by
the peers environment's Python (it imports DataTrove, nothing of this project).

`python tests/bench/peers_datatrove.py IN_DIR WORK_DIR --lid-model PATH` runs,
with `LocalPipelineExecutor(workers=2)`, the pipeline FineWeb runs with these
stages, on the JSON lines files of IN_DIR (`id`, `text`):

1. JsonlReader -> LanguageFilter(["en"], 0.65) -> C4QualityFilter (DataTrove's
   defaults, FineWeb's: 3 words a line, 5 sentences) -> JsonlWriter(filtered)
   -> MinhashDedupSignature (16 buckets x 8 hashes = 128, 5-grams);
2. MinhashDedupBuckets; 3. MinhashDedupCluster;
4. JsonlReader(filtered) -> MinhashDedupFilter -> JsonlWriter(output).

Its language model is the local fastText file given (no download): the
`FT176LID` of the filter is pointed at it. Writes WORK_DIR/result.json: the
documents kept after each stage and the ids of the output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("work")
    parser.add_argument("--lid-model", required=True, help="fastText lid.176 model file")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=2, help="tasks of the per-file stages")
    args = parser.parse_args()

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.filters import C4QualityFilter, LanguageFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    work = Path(args.work)
    minhash = MinhashConfig(n_grams=5, num_buckets=16, hashes_per_bucket=8)
    lid = LanguageFilter(languages=["en"], language_threshold=0.65)
    # a local file instead of the URL it would download (the class attribute,
    # overridden per instance as its GlotLID subclass does)
    lid.model.MODEL_URL = os.path.abspath(args.lid_model)

    def executor(name: str, pipeline: list, tasks: int, depends=None) -> LocalPipelineExecutor:
        return LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=args.workers,
                                     logging_dir=str(work / "logs" / name), depends=depends)

    filtered = str(work / "filtered")
    sigs = executor("1-filter-signatures", [
        JsonlReader(args.input, glob_pattern="*.jsonl"),
        lid,
        C4QualityFilter(),
        JsonlWriter(filtered, compression=None),
        MinhashDedupSignature(output_folder=str(work / "signatures"), config=minhash),
    ], args.tasks)
    buckets = executor("2-buckets", [
        MinhashDedupBuckets(input_folder=str(work / "signatures"), output_folder=str(work / "buckets"),
                            config=minhash),
    ], minhash.num_buckets, depends=sigs)
    clusters = executor("3-clusters", [
        MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove_ids"),
                            config=minhash),
    ], 1, depends=buckets)
    dedup = executor("4-filter", [
        JsonlReader(filtered),
        MinhashDedupFilter(input_folder=str(work / "remove_ids")),
        JsonlWriter(str(work / "output"), compression=None),
    ], args.tasks, depends=clusters)
    dedup.run()

    def ids(folder: str) -> list[str]:
        out = []
        for path in sorted(Path(folder).glob("*.jsonl")):
            with open(path, encoding="utf-8") as f:
                out += [json.loads(line)["id"] for line in f if line.strip()]
        return out

    stats = json.loads((work / "logs" / "1-filter-signatures" / "stats.json").read_text())
    lid_kept = next(s["stats"].get("forwarded", 0) for s in stats if "Language" in s["name"])
    output = ids(str(work / "output"))
    (work / "result.json").write_text(json.dumps(
        {"kept": {"lid": lid_kept, "c4": len(ids(filtered)), "dedup": len(output)}, "ids": output}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
