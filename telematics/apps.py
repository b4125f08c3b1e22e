from django.apps import AppConfig


class TelematicsConfig(AppConfig):
    name = "telematics"
    verbose_name = "Telematics"
