"""The logbook's pages, under ``/logbook/``."""

from django.urls import path

from logbook import views

app_name = "logbook"

urlpatterns = [
    path("", views.home, name="home"),
    path("trips/", views.trip_list, name="trips"),
    path("trips/classify/", views.classify_many, name="classify-many"),
    path("trips/<int:pk>/", views.trip_detail, name="trip"),
    path("trips/<int:pk>/classify/", views.classify_trip, name="classify"),
    path("trips/<int:pk>/confirm/", views.confirm_trip, name="confirm"),
    path("trips/<int:pk>/cancel/", views.cancel_trip_view, name="cancel"),
    path("trips/<int:pk>/split/", views.split_trip_view, name="split"),
    path("trips/<int:pk>/merge/", views.merge_trip_view, name="merge"),
    path("vehicle/", views.choose_vehicle, name="choose-vehicle"),
    path("vehicles/<int:pk>/", views.vehicle_logbook, name="vehicle"),
    path("vehicles/<int:pk>/export/", views.vehicle_export, name="export"),
    path("gaps/<int:pk>/explain/", views.explain_odometer_gap, name="explain-gap"),
]
