# authsvc: production image. Migrations run before the server starts serving.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    AUTHSVC_ENV=production INSTANCE_PATH=/var/lib/authsvc
WORKDIR /app

COPY pyproject.toml setup.cfg README.md ./
COPY authsvc ./authsvc
RUN pip install . && useradd --system --home /var/lib/authsvc --create-home authsvc
COPY migrations ./migrations
COPY wsgi.py gunicorn.conf.py ./

USER authsvc
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["sh", "-c", "authsvc db upgrade && exec gunicorn -c gunicorn.conf.py wsgi:app"]
