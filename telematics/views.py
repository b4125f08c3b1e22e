from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


def metrics(request: HttpRequest) -> HttpResponse:
    """Ingest counters in Prometheus' text format (see telematics.metrics)."""
    import telematics.metrics  # noqa: F401 - registers the counters

    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
