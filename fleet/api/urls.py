"""``/api/v1/``: the resources, the token login, the position feed, schema and docs."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from fleet.api import alerts, commands, jobs, trips, vehicle_data, views, webhooks

router = SimpleRouter()
router.register("organizations", views.OrganisationViewSet, basename="api-organisation")
router.register("users", views.UserViewSet, basename="api-user")
router.register("vehicles", views.VehicleViewSet, basename="api-vehicle")
router.register("devices", views.DeviceViewSet, basename="api-device")
router.register("drivers", views.DriverViewSet, basename="api-driver")
router.register("api-keys", views.ApiKeyViewSet, basename="api-key")
router.register("faults", vehicle_data.FaultViewSet, basename="api-fault")
router.register("service-plans", vehicle_data.ServicePlanViewSet, basename="api-service-plan")
router.register("dbc-files", vehicle_data.DbcFileViewSet, basename="api-dbc-file")
router.register("geofences", alerts.GeofenceViewSet, basename="api-geofence")
router.register("events", alerts.EventViewSet, basename="api-event")
router.register("alert-rules", alerts.AlertRuleViewSet, basename="api-alert-rule")
router.register("trips", trips.TripViewSet, basename="api-trip")
router.register("stops", trips.StopViewSet, basename="api-stop")
router.register("jobs", jobs.JobViewSet, basename="api-job")
router.register(r"jobs/(?P<job_pk>[0-9]{1,18})/stops", jobs.JobStopViewSet,
                basename="api-job-stop")
router.register("webhooks", webhooks.WebhookViewSet, basename="api-webhook")
router.register(r"devices/(?P<device_pk>[0-9]{1,18})/commands", commands.UnitCommandViewSet,
                basename="api-device-command")
router.register(r"vehicles/(?P<vehicle_pk>[^/.]+)/signals", vehicle_data.VehicleSignalsViewSet,
                basename="api-vehicle-signal")

urlpatterns = [
    path("auth/token/", views.TokenView.as_view(), name="api-token"),
    path("positions/feed/", views.PositionFeedView.as_view(), name="api-position-feed"),
    path("signals/catalogue/", vehicle_data.SignalCatalogueView.as_view(),
         name="api-signal-catalogue"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's start-up script as a file: no inline script.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    *router.urls,
]
