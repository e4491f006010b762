# The Beam worker image: Beam's own Python 3.11 SDK container, with the runtime
# requirements and this project preinstalled, so a worker starts without any pip
# install or compile at boot. Build it from the repository root and push it:
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/llama-worker:TAG .
# then run the jobs with --sdk_container_image=THAT --experiments=use_runner_v2
# instead of --setup_file/--requirements_file (configs/llama-1.4t.yaml). The tag
# must stay the launcher's Beam release: the runner checks the SDK versions match.
FROM apache/beam_python3.11_sdk:2.77.0

# The pinned runtime set first, in its own layer: rebuilt only when the lock
# changes. fasttext 0.9.3 ships no wheel; it is compiled here, once (the SDK image
# is Debian's full python image, with a C++ compiler), not by every worker.
COPY requirements.txt /tmp/llama-stack/requirements.txt
RUN pip install --no-cache-dir -r /tmp/llama-stack/requirements.txt

# The project (pipeline/, tokenizer/, trainer/), installed as a regular package:
# its dependencies are the pins above (--no-deps), built with their setuptools.
COPY pyproject.toml setup.py /tmp/llama-stack/
COPY pipeline /tmp/llama-stack/pipeline
COPY tokenizer /tmp/llama-stack/tokenizer
COPY trainer /tmp/llama-stack/trainer
RUN pip install --no-cache-dir --no-deps --no-build-isolation /tmp/llama-stack \
    && rm -rf /tmp/llama-stack \
    && python -c "from pipeline.filters.langid import check_fasttext_module as c; c(); import pipeline.clean, pipeline.shards, tokenizer"

# Beam's boot program stays the entrypoint: it talks to the runner and starts the
# SDK harness (the base image sets it; restated so no edit above drops it).
ENTRYPOINT ["/opt/apache/beam/boot"]
