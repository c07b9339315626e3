from django.urls import path
from rest_framework.routers import SimpleRouter

from review.api import views

# Review's endpoints are commands and reads, not viewsets: the one API root (labweb/urls.py) lists them by name.
router = SimpleRouter()
ENDPOINTS = {"review/items": "review-item-list", "review/stats": "review-stats", "review/agreement": "review-agreement"}

urlpatterns = [
    path("items/", views.ItemList.as_view(), name="review-item-list"),
    path("items/<int:pk>/", views.ItemDetail.as_view(), name="review-item-detail"),
    path("items/<int:pk>/decide/", views.ItemDecide.as_view(), name="review-item-decide"),
    path("items/<int:pk>/edit/", views.ItemEdit.as_view(), name="review-item-edit"),
    path("undo/", views.Undo.as_view(), name="review-undo"),
    path("claim/", views.Claim.as_view(), name="review-claim"),
    path("bulk/", views.BulkList.as_view(), name="review-bulk"),
    path("bulk/preview/", views.BulkPreview.as_view(), name="review-bulk-preview"),
    path("bulk/<int:pk>/", views.BulkDetail.as_view(), name="review-bulk-detail"),
    path("bulk/<int:pk>/undo/", views.BulkUndo.as_view(), name="review-bulk-undo"),
    path("bulk/<int:pk>/resume/", views.BulkResume.as_view(), name="review-bulk-resume"),
    path("bulk/<int:pk>/cancel/", views.BulkCancel.as_view(), name="review-bulk-cancel"),
    path("stats/", views.Stats.as_view(), name="review-stats"),
    path("agreement/", views.Agreement.as_view(), name="review-agreement"),
]
