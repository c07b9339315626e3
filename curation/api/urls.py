from django.urls import path
from rest_framework.routers import SimpleRouter

from curation.api import views

# Served, with every other app's, by the one API root in labweb/urls.py.
router = SimpleRouter()
router.register("leaves", views.LeafViewSet, basename="leaf")
router.register("seeds", views.SeedViewSet, basename="seed")
router.register("documents", views.DocumentViewSet, basename="document")
router.register("imports", views.ImportViewSet, basename="import")
router.register("import-jobs", views.ImportJobViewSet, basename="import-job")
router.register("snapshots", views.SnapshotViewSet, basename="snapshot")

urlpatterns = [
    path("tree/", views.tree, name="api-tree"),
    path("diff/", views.diff, name="api-diff"),
    path("export/", views.export, name="api-export"),
]
ENDPOINTS = {"tree": "api-tree", "diff": "api-diff", "export": "api-export"}
