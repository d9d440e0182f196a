# mudgate in a container: a wheel built in one stage, installed in a slim runtime that runs as
# a user of its own. Every setting comes from MUDGATE_* in the environment (README's table).
#
#     docker build -t mudgate .
#     docker run --rm -p 54731:54731 --memory 512m -e MUDGATE_SECRET_KEY=... mudgate
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip install --no-cache-dir build && python -m build --wheel --outdir /dist

FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MUDGATE_HOST=0.0.0.0 \
    MUDGATE_PORT=54731 \
    MUDGATE_LOG_FORMAT=json
COPY --from=build /dist /dist
RUN pip install --no-cache-dir "$(ls /dist/mudgate-*.whl)[redis]" && rm -rf /dist \
    && useradd --system --create-home --uid 10001 mudgate
USER mudgate
WORKDIR /home/mudgate
EXPOSE 54731
# mudgate reads the container's memory limit itself (cgroup v2 or v1) and sheds load before it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:54731/health/live', timeout=2)"]
# SIGTERM: players are told 1012 (reconnect) and the process exits within MUDGATE_SHUTDOWN_TIMEOUT.
STOPSIGNAL SIGTERM
CMD ["mudgate", "serve"]
