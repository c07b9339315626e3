from rest_framework.routers import SimpleRouter

from training.api import views

router = SimpleRouter()
router.register("training-jobs", views.TrainingJobViewSet, basename="training-job")
router.register("checkpoints", views.CheckpointViewSet, basename="checkpoint")
router.register("training-uploads", views.UploadViewSet, basename="training-upload")

urlpatterns = router.urls
