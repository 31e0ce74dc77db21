# tfgate's runtime image: the proxy (proxy/) and its locked runtime dependencies, nothing
# else: no TensorFlow, no development tooling (tfgate_dev/), no tests. It runs as UID/GID
# 10001 (the Helm chart's runAsUser) and needs no writable root filesystem.
#
#   docker build -t tfgate:0.1.0 .
#
# CI has no container engine, so this file is not built there; tests/test_helm_image.py
# reads it and requirements.lock instead (docs/kubernetes.md, "The image").
# requirements.lock pins every runtime dependency of pyproject.toml with its hashes;
# regenerate it with the pip-compile command written at its top.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.lock /tmp/requirements.lock
# Wheels only, each checked against the lock's hashes; nothing resolved at build time.
RUN python -m venv /opt/tfgate \
 && /opt/tfgate/bin/pip install --require-hashes --no-deps --only-binary=:all: \
        -r /tmp/requirements.lock

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 tfgate \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin tfgate
COPY --from=deps /opt/tfgate /opt/tfgate
COPY proxy /opt/tfgate/app/proxy
# Bytecode compiled now, because the root filesystem is read-only at run time.
RUN /opt/tfgate/bin/python -m compileall -q /opt/tfgate/app/proxy \
 && printf '#!/opt/tfgate/bin/python\nimport sys\nfrom proxy.cli import main\nsys.exit(main())\n' \
        > /usr/local/bin/tfgate \
 && chmod 0755 /usr/local/bin/tfgate
ENV PATH=/opt/tfgate/bin:$PATH \
    PYTHONPATH=/opt/tfgate/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["tfgate"]
CMD ["serve", "--config", "/etc/tfgate/config/tfgate.yaml"]
