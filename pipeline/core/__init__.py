"""The Beam-free core every command shares: configuration and errors
(`config`), the data contracts (`schema`) and their storage (`io`: local paths
without Beam, gs:// and s3:// through Beam's FileSystems, imported only then),
the shard and checkpoint contracts between the shard job, the trainer and the
tokenizer (`contracts`), and the lineage of stage outputs (`lineage`). The
tokenizer and the trainer import only this package from `pipeline`."""
