# fitquad on a GPU host (see README.md, "Docker"):
#   docker build -t fitquad .
#   docker run --gpus all -v fitquad-runs:/home/fitquad/app/runs fitquad fit --config configs/lesson3.yaml --trainer.accelerator gpu
# One torch in the image: the base is a slim Python with no torch of its own, and torch's own Linux wheel from
# PyPI (built with CUDA, its CUDA libraries coming as nvidia-* wheels) is installed once, pinned to the version the
# tests run on, before fitquad, so that `pip install .` finds it satisfied. The host needs an NVIDIA driver and
# the NVIDIA container toolkit (`--gpus all`); CUDA itself is in the image.
FROM python:3.11-slim

# Output straight to `docker logs`; no pip cache or version check in the image.
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Runs are written by an unprivileged user, never root (a uid clear of any the base image has).
RUN useradd --create-home --uid 10001 --user-group fitquad
WORKDIR /home/fitquad/app

# The package from this repository (a regular install), then the configs it runs.
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir torch==2.13.0 && pip install --no-cache-dir . && rm -rf build src/*.egg-info
COPY configs ./configs

# The runs folder, the user's, so a fresh volume is theirs too; it is kept outside the container.
RUN mkdir runs && chown 10001:10001 runs
USER 10001:10001
VOLUME ["/home/fitquad/app/runs"]

# TensorBoard, when served from the container: see README.md.
EXPOSE 6006
ENTRYPOINT ["fitquad"]
CMD ["fit", "--config", "configs/lesson3.yaml"]
