# One image for every XNovu process; docker-compose.yml picks the command.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# The dependencies first, exactly as locked (hashes checked), in a layer of their own.
COPY requirements/base.lock ./requirements/
RUN pip install --require-hashes -r requirements/base.lock
COPY pyproject.toml README.md LICENSE ./
COPY api ./api
COPY worker ./worker
COPY shared ./shared
COPY novu_emulator ./novu_emulator
COPY migrations ./migrations
RUN pip install --no-deps . && useradd --system --uid 10001 xnovu
USER xnovu

EXPOSE 8000 5555
CMD ["uvicorn", "api.app:app", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
