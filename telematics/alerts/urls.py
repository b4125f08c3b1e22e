"""The alert rule pages (``telematics.alerts.rule_views``), under ``/alert-rules/``."""

from django.urls import path

from telematics.alerts import rule_views

urlpatterns = [
    path("", rule_views.rule_list, name="alert-rules"),
    path("new/", rule_views.rule_new, name="alert-rule-new"),
    path("<int:pk>/", rule_views.rule_edit, name="alert-rule"),
    path("<int:pk>/active/", rule_views.rule_active, name="alert-rule-active"),
]
