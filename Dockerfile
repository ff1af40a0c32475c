FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY orchestrator orchestrator
COPY api api
COPY worker worker
COPY cli cli
RUN pip install --no-cache-dir .
EXPOSE 3000
CMD ["orchestrator", "api", "--port", "3000"]
