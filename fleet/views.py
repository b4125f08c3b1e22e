from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from fleet.selectors import organisations_visible_to, role_of, vehicles_visible_to


@login_required
def home(request: HttpRequest) -> HttpResponse:
    vehicles = vehicles_visible_to(request.user).select_related("state").order_by("name")
    return render(request, "fleet/home.html", {
        "vehicles": vehicles,
        "organisations": organisations_visible_to(request.user),
        "role": role_of(request.user),
    })


def health(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers: answers 503 when the database does not."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:
        return JsonResponse({"status": "error", "database": str(error)}, status=503)
    return JsonResponse({"status": "ok"})
