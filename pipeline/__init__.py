"""Data pipeline: Beam jobs that read, clean, language-identify and deduplicate
the seven LLaMA sources into Document Arrow files, and tokenize them into
mixture-weighted token shards."""
