# tfgate's runtime image: the proxy and its core dependencies only (no TensorFlow).
# Not built by CI (no container engine there); the Helm chart expects it as `tfgate:<version>`.
FROM python:3.11-slim
RUN useradd --uid 10001 --no-create-home tfgate
WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip install --no-cache-dir . && rm -rf /root/.cache
USER 10001
ENTRYPOINT ["tfgate"]
CMD ["serve", "--config", "/etc/tfgate/config/tfgate.yaml"]
