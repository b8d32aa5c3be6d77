# One image for the HTTP service (the default command), the queue worker (`pneumoscan worker`)
# and the DICOM node (`pneumoscan dicom-node`).
# docker compose builds it; see "Deploying in a hospital network" in the README.
FROM python:3.11-slim

# The installed package lives in site-packages, so the paths that default to the source tree
# (the bundled model, var/) are set here to places that exist in the image.
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BENTOML_HOME=/home/pneumoscan/bentoml \
    BENTOML_DO_NOT_TRACK=true \
    PNEUMOSCAN_MODEL_DIR=/app/models/pneumonia-cnn \
    PNEUMOSCAN_DATA_DIR=/data/var \
    PNEUMOSCAN_JOBS_DIR=/data/jobs

# A fixed UID, so that a host folder mounted for job output can be made writable for it.
RUN useradd --create-home --uid 10001 pneumoscan \
    && mkdir -p /data/input /data/jobs /data/var \
    && chown pneumoscan:pneumoscan /data/jobs /data/var

# The dependencies first, in a layer of their own: a change to the code alone rebuilds from the
# COPY below, without downloading TensorFlow again.
COPY pyproject.toml /tmp/src/
RUN python -c "import tomllib; print(*tomllib.load(open('/tmp/src/pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY README.md /tmp/src/
COPY pneumoscan/ /tmp/src/pneumoscan/
COPY service/ /tmp/src/service/
COPY training/ /tmp/src/training/
COPY cli/ /tmp/src/cli/
# Installed rather than run from a source folder, so `bentoml serve` and the `pneumoscan`
# console script import the same single copy of the code.
RUN pip install --no-deps /tmp/src && rm -rf /tmp/src

COPY models/pneumonia-cnn/ /app/models/pneumonia-cnn/
WORKDIR /app
USER pneumoscan
# The service loads the model from the BentoML model store, the worker from PNEUMOSCAN_MODEL_DIR:
# both come from the same bundled folder.
RUN pneumoscan register

EXPOSE 3000
CMD ["bentoml", "serve", "service.service:Pneumoscan", "--host", "0.0.0.0", "--port", "3000"]
