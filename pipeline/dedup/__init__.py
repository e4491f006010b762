"""Deduplication, each kind with its pure keys beside its Beam transform:

- exact: a document's content hash (`exact_keys`); one kept per hash (`exact`);
- lines: CCNet's normalised line hashes and shard groups (`line_keys`); a line
  kept where it first occurs (`lines`);
- near: datasketch-compatible MinHash signatures and LSH bands (`minhash`);
  candidate pairs, connected components, one survivor per cluster (`near`). A
  source's `near_dedup` group picks the settings: web pages at Jaccard 0.8,
  books at 0.9 (LLaMA: a book with more than 90% overlap with another goes).
"""
