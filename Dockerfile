# One image for every pushsvc process: `serve` by default; docker-compose.yml runs
# `web`, `aggregate` and the demo producer from it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Every dependency ships manylinux wheels for CPython 3.11, so no compiler is needed.
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && rm -rf src build

RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin pushsvc
USER pushsvc

EXPOSE 8000
ENTRYPOINT ["pushsvc"]
CMD ["serve", "--host", "0.0.0.0"]
