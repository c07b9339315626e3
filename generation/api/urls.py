from rest_framework.routers import SimpleRouter

from generation.api import views

# Served, with every other app's, by the one API root in labweb/urls.py.
router = SimpleRouter()
router.register("teachers", views.TeacherViewSet, basename="teacher")
router.register("runs", views.RunViewSet, basename="run")
router.register("work-items", views.WorkItemViewSet, basename="work-item")
router.register("samples", views.SampleViewSet, basename="sample")
