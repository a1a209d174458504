# agora-reconciler as a container: the configuration is mounted at /config (the working folder),
# so `plan`, `apply`, `drift` read /config/agora.yaml (or the paths given) and keep the ledger next
# to it. Build from a checkout of this repository:
#   docker build -t agora-reconciler .
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/infra/agora:/config" \
#     -e AGORA_CUSTOMER_ID -e AGORA_CUSTOMER_SECRET agora-reconciler plan
FROM python:3.12-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas/ schemas/
COPY reconciler/ reconciler/
RUN python -m venv /opt/agora-reconciler \
 && /opt/agora-reconciler/bin/pip install . \
 && /opt/agora-reconciler/bin/pip uninstall -y pip \
 && /opt/agora-reconciler/bin/python -m compileall -q /opt/agora-reconciler

FROM python:3.12-slim
LABEL org.opencontainers.image.title="agora-reconciler" \
      org.opencontainers.image.description="Declarative phone numbers and long-running voice agents for Agora Conversational AI" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN useradd --system --uid 10001 --user-group --home-dir /config --no-create-home --shell /usr/sbin/nologin agora \
 && mkdir /config && chown agora:agora /config
COPY --from=build /opt/agora-reconciler /opt/agora-reconciler
ENV PATH=/opt/agora-reconciler/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /config
USER 10001:10001
ENTRYPOINT ["agora-reconciler"]
CMD ["--help"]
