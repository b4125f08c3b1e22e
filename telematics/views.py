from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


def metrics(request: HttpRequest) -> HttpResponse:
    """Ingest counters in Prometheus' text format (see telematics.metrics).

    Only for the monitoring hosts in METRICS_ALLOWED_IPS and staff users: the counters
    tell how many units a platform serves, which is nobody else's business.
    """
    import telematics.metrics  # noqa: F401 - registers the counters

    allowed = request.META.get("REMOTE_ADDR") in settings.METRICS_ALLOWED_IPS
    if not (allowed or (request.user.is_authenticated and request.user.is_staff)):
        raise Http404
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
