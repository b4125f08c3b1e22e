FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
ENV PYTHONUNBUFFERED=1
EXPOSE 8000 5027 5023 5005 5055 5683/udp
# WEB_WORKERS processes (one per core when REDIS_URL is set): see fleet/server.py.
CMD ["python", "-m", "fleet.server", "--host", "0.0.0.0", "--port", "8000"]
