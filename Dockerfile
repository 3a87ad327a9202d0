# A challenge container: segments every scan of /input into /output with the entry baked in, as ATLAS R2.0
# and ISLES'22 run entries (`patchwork infer /input /output`, see `patchwork infer --help`). CPU by default;
# given a GPU (`docker run --gpus all`, NVIDIA Container Toolkit) torch finds CUDA and uses it.
#
#   patchwork package ...   (the workflow's last step) writes the entry to results/entry
#   docker build -t patchwork-entry .
#   docker run --rm --network none -v "$PWD/in:/input:ro" -v "$PWD/out:/output" patchwork-entry
# It runs as user patchwork (uid 1000): /output must be writable by it (or add `--user "$(id -u)"`).
#
# BASE: any Debian bookworm image (Python 3.11). Without a registry, make one from Debian's packages:
#   debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm rootfs
#   tar -C rootfs -c . | docker import - patchwork-base:bookworm
#   docker build --build-arg BASE=patchwork-base:bookworm -t patchwork-entry .
# torch comes from PyPI, whose Linux wheels carry CUDA; wheels put in ./wheels/ are preferred (a CPU-only
# torch wheel of the locked version makes an image without CUDA, several GB smaller).
# ENTRY: an entry folder inside the build context and let through by .dockerignore.

ARG BASE=debian:bookworm-slim

# Stage 1: the virtual environment (the wheels copied in stay in this stage, out of the image).
FROM ${BASE} AS venv
ARG ENTRY=results/entry
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN if ! python3 -c "import ensurepip" 2>/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv
# The dependencies at the versions the entry was made with (its requirements.lock). Local version labels
# (2.13.0+cpu) are dropped: `torch==2.13.0` then takes a wheel of ./wheels/ or PyPI's build of that version.
# `wheel[s]` copies ./wheels/ when it exists (pyproject.toml, copied along, keeps the COPY from matching nothing).
COPY pyproject.toml wheel[s] /tmp/wheels/
COPY ${ENTRY}/requirements.lock /tmp/requirements.lock
RUN sed -E 's/\+[A-Za-z0-9.]+$//' /tmp/requirements.lock > /tmp/requirements.txt \
    && pip install --find-links /tmp/wheels -r /tmp/requirements.txt
COPY pyproject.toml README.md LICENSE /src/
COPY patchwork /src/patchwork
RUN pip install --no-deps /src && pip check

# Stage 2: the image: Python, the environment, the entry.
FROM ${BASE}
ARG ENTRY=results/entry
ENV PYTHONDONTWRITEBYTECODE=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN if ! python3 -c "import venv" 2>/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends python3 && rm -rf /var/lib/apt/lists/*; \
    fi \
    && useradd --create-home --uid 1000 patchwork
COPY --from=venv /opt/venv /opt/venv

# The entry, checked where it will run: every checksum, and its stored test case re-predicted byte for byte
# (as the user that runs the container, whose caches, matplotlib's font list, are then built in).
COPY ${ENTRY} /opt/entry
USER patchwork
RUN patchwork verify /opt/entry

ENTRYPOINT ["patchwork", "infer", "--entry", "/opt/entry"]
CMD ["/input", "/output"]
