"""How input bytes are framed and decoded, for every source alike: text
decoding (`decode`), JSON lines (`jsonl`), Parquet (`parquet`), multi-member
gzip (`gzip_members`), WARC records (`warc`), and what a reader does with input
it cannot read (`errors`: the dead letter, "cannot open")."""
