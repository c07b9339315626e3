from rest_framework.routers import SimpleRouter

from evaluation.api import views

# Served, with every other app's, by the one API root in labweb/urls.py.
router = SimpleRouter()
router.register("evaluations", views.EvaluationViewSet, basename="evaluation")
