from rest_framework.routers import SimpleRouter

from training.api import views

# Served, with every other app's, by the one API root in labweb/urls.py.
router = SimpleRouter()
router.register("training-jobs", views.TrainingJobViewSet, basename="training-job")
router.register("checkpoints", views.CheckpointViewSet, basename="checkpoint")
router.register("training-uploads", views.UploadViewSet, basename="training-upload")
router.register("datasets", views.DatasetViewSet, basename="dataset")
