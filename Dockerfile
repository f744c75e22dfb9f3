# The image for every Sluice service in docker-compose.yml (worker, beat, flower, metrics).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tasks ./tasks
COPY integrations ./integrations
RUN pip install --no-cache-dir '.[postgres]' && useradd --create-home sluice
USER sluice
ENV PYTHONUNBUFFERED=1 SLUICE_CONFIG=/etc/sluice/sluice.toml
CMD ["celery", "-A", "tasks", "worker", "--loglevel", "INFO"]
