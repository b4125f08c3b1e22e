from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from fleet import job_views, views, views_history
from fleet.login import RateLimitedLoginView
from telematics import views as telematics_views
from telematics.alerts import views as alert_views

urlpatterns = [
    path("", views.home, name="home"),
    path("vehicles/<int:pk>/", views.vehicle_detail, name="vehicle"),
    path("vehicles/<int:pk>/replay/", views_history.replay, name="vehicle-replay"),
    path("vehicles/<int:pk>/replay/track/", views_history.replay_track,
         name="vehicle-replay-track"),
    path("vehicles/<int:pk>/replay/export/", views_history.replay_export,
         name="vehicle-replay-export"),
    path("vehicles/<int:pk>/charts/", views_history.charts, name="vehicle-charts"),
    path("vehicles/<int:pk>/charts/data/", views_history.charts_data,
         name="vehicle-charts-data"),
    path("reports/", views_history.report_page, name="reports"),
    path("reports/export/", views_history.report_export, name="reports-export"),
    path("events/", alert_views.events_page, name="events"),
    path("alert-rules/", include("telematics.alerts.urls")),
    path("jobs/", job_views.jobs_page, name="jobs"),
    path("jobs/<int:pk>/status/", job_views.job_status, name="job-status"),
    path("login/", RateLimitedLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("health/", views.health, name="health"),
    path("metrics", telematics_views.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("fleet.api.urls")),
    path("logbook/", include("logbook.urls")),
]
