"""``/api/v1/``: the resources, the token login, the position feed, schema and docs."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from fleet.api import vehicle_data, views

router = SimpleRouter()
router.register("organizations", views.OrganisationViewSet, basename="api-organisation")
router.register("users", views.UserViewSet, basename="api-user")
router.register("vehicles", views.VehicleViewSet, basename="api-vehicle")
router.register("devices", views.DeviceViewSet, basename="api-device")
router.register("drivers", views.DriverViewSet, basename="api-driver")
router.register("api-keys", views.ApiKeyViewSet, basename="api-key")
router.register("faults", vehicle_data.FaultViewSet, basename="api-fault")
router.register("service-plans", vehicle_data.ServicePlanViewSet, basename="api-service-plan")
router.register(r"vehicles/(?P<vehicle_pk>[^/.]+)/signals", vehicle_data.VehicleSignalsViewSet,
                basename="api-vehicle-signal")

urlpatterns = [
    path("auth/token/", views.TokenView.as_view(), name="api-token"),
    path("positions/feed/", views.PositionFeedView.as_view(), name="api-position-feed"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's start-up script as a file: no inline script.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    *router.urls,
]
