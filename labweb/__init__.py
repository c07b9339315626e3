"""The LabWeb project: settings, URLs, the Celery app and what every app shares.

The Celery app is loaded by `LabwebConfig.ready()` (and by `celery -A labweb`), not here, so that
`labweb.errors` stays importable by the pure cores without loading Django.
"""
