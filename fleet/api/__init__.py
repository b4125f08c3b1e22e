"""The REST API that dispatch systems and other integrations use (``/api/v1/``)."""
