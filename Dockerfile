# One image for every XNovu process; docker-compose.yml picks the command.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY api ./api
COPY worker ./worker
COPY shared ./shared
COPY novu_emulator ./novu_emulator
COPY migrations ./migrations
RUN pip install . && useradd --system --uid 10001 xnovu
USER xnovu

EXPOSE 8000 5555
CMD ["uvicorn", "api.app:app", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
