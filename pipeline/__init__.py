"""Data pipeline: Beam jobs that read, clean, language-identify and deduplicate
the seven LLaMA sources into Document Arrow files, and tokenize them into
mixture-weighted token shards. ARCHITECTURE.md maps its packages, the data
contracts and where each source's rules are."""

import logging as _logging


def _not_beam_import_noise(record: _logging.LogRecord) -> bool:
    # apache_beam.io.gcp warns on the root logger at import time when the GCP
    # extra is absent; nothing here uses BigQuery, so the line is only noise
    return not record.getMessage().startswith("apitools not found")


_logging.getLogger().addFilter(_not_beam_import_noise)
