from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from fleet import views
from fleet.login import RateLimitedLoginView
from telematics import views as telematics_views

urlpatterns = [
    path("", views.home, name="home"),
    path("vehicles/<int:pk>/", views.vehicle_detail, name="vehicle"),
    path("login/", RateLimitedLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("health/", views.health, name="health"),
    path("metrics", telematics_views.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("fleet.api.urls")),
]
