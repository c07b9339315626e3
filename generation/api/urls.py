from rest_framework.routers import SimpleRouter

from generation.api import views

# SimpleRouter: the API root view belongs to curation's DefaultRouter, which is mounted at the same prefix.
router = SimpleRouter()
router.register("teachers", views.TeacherViewSet, basename="teacher")
router.register("runs", views.RunViewSet, basename="run")
router.register("work-items", views.WorkItemViewSet, basename="work-item")
router.register("samples", views.SampleViewSet, basename="sample")

urlpatterns = router.urls
