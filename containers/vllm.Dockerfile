# The LLM stage (datagen's rephrase/refusal generations): vLLM with its own torch, apart from the
# training image, plus the project's corpus packages installed beside it without replacing that torch.
# datagen starts the vLLM server from SPT_VLLM_PYTHON, the image's own Python.
#
#   docker build -f containers/vllm.Dockerfile -t safety-pretraining-vllm:latest .
#   bash containers/build_sqsh.sh --from-docker safety-pretraining-vllm:latest /shared/images/spt-vllm.sqsh
#
# Then run the corpus job in it: python -m launch corpus ... environment.container_image=/shared/images/spt-vllm.sqsh
ARG VLLM_IMAGE=vllm/vllm-openai:v0.10.1
FROM ${VLLM_IMAGE}

ARG EXTRAS=data,llm
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    SPT_VLLM_PYTHON=/usr/bin/python3

WORKDIR /opt/safety-pretraining
COPY pyproject.toml setup.py README.md ./
COPY configs ./configs
COPY infra ./infra
COPY datagen ./datagen
COPY trainer ./trainer
COPY evalkit ./evalkit
COPY launch ./launch
COPY containers ./containers
RUN PYTHON=/usr/bin/python3 bash containers/install_project.sh /opt/safety-pretraining "${EXTRAS}" \
    && /usr/bin/python3 -c "import vllm, datagen.config, infra.inference.server"
# the base image starts the API server; jobs (pyxis, docker run) give their own command
ENTRYPOINT []
CMD ["/bin/bash"]
