FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY orchestrator orchestrator
COPY api api
COPY worker worker
COPY cli cli
COPY examples examples
RUN pip install --no-cache-dir . && useradd --system --create-home orchestrator \
    && mkdir -p /var/lib/beat /var/lib/flower \
    && chown orchestrator /var/lib/beat /var/lib/flower
USER orchestrator
ENV LOG_FORMAT=json
EXPOSE 3000 5555
CMD ["orchestrator", "api", "--port", "3000"]
